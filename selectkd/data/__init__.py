"""Rows from a dataset: (uid, text[, text_pair], label), through `datasets`.

sources (opening --data), labels (ids and names, mapped across splits), holdout (a dev part
of the training rows), rows (Rows, load_rows).
"""
