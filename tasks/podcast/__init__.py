"""Podcast feeds: a feed (hostile input) -> episodes -> items (feeds.py), which episodes are new
(state.py), and transcripts a feed ships for an episode (transcripts.py; with --chapters, their
notes too). Imports: errors, inputs, outputs, captions, run, extract.
"""
