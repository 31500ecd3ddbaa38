"""The content-addressed store: Arrow parts + a manifest per key, memory-mapped reads, keys, fingerprints."""
