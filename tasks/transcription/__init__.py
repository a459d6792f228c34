"""Transcription of one item: chunks stream from the decoder to the requests, each reply is
checked (qa.py) and re-asked once when it must be, then joined into one transcript with timed
segments and words (assemble.py); with --chapters, its notes (extract); with --speakers, who
speaks (tasks.speakers). Imports: errors, inputs, audio, model, outputs, captions, run, extract,
speakers.
"""
