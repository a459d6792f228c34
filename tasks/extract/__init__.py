"""Extract (`--chapters`): a finished transcript's chapters, show notes (a summary, keywords)
and sponsor spots. With a remote model, one tool call per item whose arguments are checked as
hostile input (tool.py), re-asked once, else made offline; offline (offline.py): sentences with
times (sentences.py), topic segmentation by lexical cohesion (topics.py), key-phrase titles and
an extractive summary (phrases.py), sponsor reads from what they say (sponsors.py). extract.py
is the step an item runs, writing the rows and `<item_id>.chapters.json`.
Imports: errors, options, inputs, model, outputs, captions, run.
"""
