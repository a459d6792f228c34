"""Inputs: manifest rows -> `Item`s (a bad row becomes a failed item, never a crash), and where
their bytes come from: local files, http(s), fsspec URLs, each under a `FetchPolicy` (size,
deadline, data roots) and the address guard (netguard). trust.py says what a run's inputs may
reach; locations.py compares where paths and URLs lead; local_open.py opens files from others.
Imports: errors, options, bounded, audio (the encodable formats a row may ask for).
"""
