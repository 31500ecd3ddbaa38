"""Rows from a dataset: (uid, text[, text_pair], label), through `datasets`."""
