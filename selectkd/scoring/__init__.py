"""The score stage: each teacher and the student run over a split once, into the cache (`selectkd score`)."""
