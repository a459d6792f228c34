"""Captions: word times (`Word`, the `Aligner` the flows wire in), the timed segments built from
them (or estimated from the audio when there are none), and SRT/WebVTT/JSON files. Used by both
jobs. Imports: errors, audio, text.
"""
