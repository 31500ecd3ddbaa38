"""The select stage: rank the cached pool, choose a subset, save it with its provenance, export it."""
