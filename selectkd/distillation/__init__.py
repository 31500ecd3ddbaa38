"""The distill stage: a student trained from cached teacher signals in one readable loop."""
