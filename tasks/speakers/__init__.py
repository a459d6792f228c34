"""Speaker labels (--speakers): one diarization of each item's whole recording through the
`SpeakerFinder` the flows wire in (the embedded engine, localmodel/diarization), cached with
the run's results (turns.py); each word and segment gets its speaker, segments split where the
speaker changes, and the RTTM file and `speakers` rows are made (labels.py).
Imports: errors, options, captions, outputs, run.
"""
