"""Text: what a narration item says. Books and files (EPUB, Markdown, plain) -> titled chapters
(books.py), Markdown -> speakable text -> chunks within the request budget, and the word,
clause and sentence breaks that captions use (speakable.py, cjk.py). Imports: errors, bounded, inputs.
"""
