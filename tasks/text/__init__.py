"""Text: what a narration item says. Books and files (EPUB, Markdown, plain) -> titled chapters
(chapters.py: the Book and Chapter types, Markdown and plain text; epub.py; books.py: a
manifest item's text or book), Markdown -> speakable text -> chunks within the request
budget, and the word, clause and sentence breaks that captions use (speakable.py, cjk.py).
Imports: errors, bounded, inputs.
"""
