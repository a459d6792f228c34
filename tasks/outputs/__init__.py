"""Outputs: the Parquet datasets' schemas and the output root (atomic writes, local or fsspec;
datasets.py), and a run's staged rows, read back as one snapshot and published when it ends
(staging.py). Imports: errors, inputs (ids).
"""
