"""Narration of one item: text -> chunks -> speech, each chunk heard back (verify.py), joined
into one audio file (m4b: audiobook.py) with exact captions (captions.py), and the podcast feed
of the narrations (feed.py). Imports: errors, bounded, inputs, audio, text, model, outputs, captions,
run.
"""
