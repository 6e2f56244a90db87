"""The data ring: the dataset registry and its file layouts (datasets.py), reading one file (readers.py),
tokenising once and batching by length (encoding.py). Builds on the core only."""
