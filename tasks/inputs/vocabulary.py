"""A vocabulary: names and jargon a transcript should spell right, as a list of terms.

Terms come from the operator (`--vocabulary FILE`) and from others (a manifest's `vocabulary`
column; the `vocabulary` option of a submitted run or an inbox manifest): hostile until
checked. A term is data the model is shown, never an instruction (tasks/model/prompts.py
quotes the list as JSON), and its shape is bounded before anything uses it:

- at most MAX_TERMS terms, each of 1-MAX_TERM_WORDS words and at most MAX_TERM_CHARS
  characters: letters, digits and the marks names use (' . & + - /), single spaces;
- a file at most MAX_FILE_BYTES, read no further; one term a line (`#` starts a comment);
  a manifest cell holds terms separated by `;`.

Anything else (a sentence, a newline, quotes, brackets, control characters) is refused with
the term's position, so the submitter can fix it; nothing is dropped silently.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from audiobatch.tasks.errors import InputError
from audiobatch.tasks.options import VOCABULARY_TERM_PATTERN

MAX_TERMS = 100
MAX_TERM_CHARS = 48
MAX_TERM_WORDS = 4
MAX_FILE_BYTES = 16_384
_TERM = re.compile(VOCABULARY_TERM_PATTERN)


def check_term(term: str, where: str) -> str:
    """The term in its normal form (NFC, spaces collapsed), or ValueError saying why not."""
    text = " ".join(unicodedata.normalize("NFC", term).split())
    shown = text if len(text) <= 60 else text[:57] + "..."
    if not text:
        raise ValueError(f"{where}: an empty term")
    if len(text) > MAX_TERM_CHARS:
        raise ValueError(f"{where}: term {shown!r} is longer than {MAX_TERM_CHARS} characters")
    if len(text.split()) > MAX_TERM_WORDS:
        raise ValueError(f"{where}: term {shown!r} has more than {MAX_TERM_WORDS} words: a "
                         "vocabulary lists names and terms, not sentences")
    if not _TERM.fullmatch(text):
        raise ValueError(f"{where}: term {shown!r} has characters a name does not (use letters, "
                         "digits, spaces and ' . & + - /)")
    return text


def checked_terms(terms: list[str], where: str) -> tuple[str, ...]:
    """Terms checked one by one and de-duplicated (first spelling kept), at most MAX_TERMS."""
    kept: dict[str, str] = {}
    for number, term in enumerate(terms, start=1):
        text = check_term(term, f"{where}, term {number}")
        kept.setdefault(text.casefold(), text)
    if len(kept) > MAX_TERMS:
        raise ValueError(f"{where}: {len(kept)} terms; at most {MAX_TERMS} are sent to the model")
    return tuple(kept.values())


def parse_cell(raw: str) -> tuple[str, ...]:
    """A manifest cell: terms separated by `;` (ValueError naming the bad term)."""
    if len(raw) > MAX_TERMS * (MAX_TERM_CHARS + 2):
        raise ValueError(f"vocabulary: {len(raw):,} characters; at most {MAX_TERMS} terms of "
                         f"up to {MAX_TERM_CHARS} characters fit")
    return checked_terms([t for t in raw.split(";") if t.strip()], "vocabulary")


def read_vocabulary_file(path: str | Path) -> tuple[str, ...]:
    """`--vocabulary FILE`: UTF-8, one term a line, `#` comments; InputError when it is too
    big, not text or holds a bad term (its line number given)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise InputError(f"--vocabulary {path}: cannot read it ({error.strerror}). Give a text "
                         "file with one term a line.") from None
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"--vocabulary {path}: larger than {MAX_FILE_BYTES // 1024} KiB; a "
                         f"vocabulary holds at most {MAX_TERMS} terms of a few words")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"--vocabulary {path}: not UTF-8 text. Save it as UTF-8, one term a "
                         "line.") from None
    terms: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        term = line.split("#", 1)[0].strip()
        if term:
            try:
                terms.append(check_term(term, f"line {number}"))
            except ValueError as error:
                raise InputError(f"--vocabulary {path}: {error}") from None
    try:
        return checked_terms(terms, f"--vocabulary {path}")
    except ValueError as error:
        raise InputError(str(error)) from None


def merged(run_terms: tuple[str, ...], row_terms: tuple[str, ...], item_id: str) -> tuple[str, ...]:
    """The run's terms and a row's own, de-duplicated; InputError when more than MAX_TERMS."""
    try:
        return checked_terms([*run_terms, *row_terms], f"{item_id}: vocabulary (run and row)")
    except ValueError as error:
        raise InputError(f"{error}. Shorten the row's vocabulary.") from None
