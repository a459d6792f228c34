"""Names and jargon spelled right: a chunk's transcript checked against the item's vocabulary.

The model was given the terms as hints (tasks/model/prompts.py), yet may still write a near
miss ("Nakagowa" for "Nakagawa", "cuber netties" for "Kubernetes"). Every run of words as
long as a term, one word shorter or one longer, is compared with every term by rapidfuzz's
normalised Indel similarity of their letters (case, spaces and punctuation aside):

- the term itself, in other case ("kubernetes"): the term's spelling is put in;
- a near miss that is safe to correct: replaced by the term, punctuation around it kept, and
  reported (`transcripts.vocabulary_fixes`). Safe: similarity at least CORRECT_AT, the same
  first letter (or, in a term of DROPPED_LEAD_LETTERS or more, only its first letter unheard:
  "Gozi Okonjo" for "Ngozi Okonjo"), about the same length, and not only common English words
  (a vocabulary of "Anya" must not turn every "any" into a name);
- a weaker likeness (at least NOTICE_AT): left as it is and flagged for a person to check.

Terms are checked input (tasks/inputs/vocabulary.py) and only ever compared and copied as
text; a model's reply is the text checked here, never an instruction either.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from rapidfuzz import fuzz, process

CORRECT_AT = 85.0
NOTICE_AT = 72.0
LENGTH_SLACK = 0.35  # a correction keeps the length within 35% of the term's
DROPPED_LEAD_LETTERS = 8  # shorter terms keep their first letter: "liver" is no "Oliver"
_TOKEN = re.compile(r"\S+")
_EDGE = re.compile(r"^([^\w]*)(.*?)((?:['’]s)?[^\w]*)$", re.DOTALL)  # lead, core, possessive/tail
# Frequent English words: never corrected into a term (only flagged).
_COMMON = frozenset("""a about after again all also an and any are as at back be because been
before being but by can come could day did do does down each even first for from get give go
good had has have he her here him his how i if in into is it its just know like little long
look made make man many may me more most much must my new no not now of off on one only or
other our out over people said same say see she should so some still such take than that the
their them then there these they thing think this those through time to too two under up us
use very was way we well were what when where which while who why will with word work would
year you your ask read real red blue sea see son sun night knight right write rite new knew
nick mark bill will rose grace hope joy may june april august""".split())


@dataclass
class Checked:
    """A transcript after the vocabulary check: its text, what was corrected, what to check."""

    text: str
    fixes: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def _letters(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


@dataclass(frozen=True)
class _Window:
    first: int  # token indices [first, end)
    end: int
    letters: str


def _windows(cores: list[str], sizes: set[int]) -> list[_Window]:
    return [_Window(i, i + size, _letters(" ".join(cores[i:i + size])))
            for size in sorted(sizes) for i in range(len(cores) - size + 1)]


def _split(token: str) -> tuple[str, str, str]:
    lead, core, tail = _EDGE.match(token).groups()  # type: ignore[union-attr]
    return lead, core, tail


def _same_start(heard: str, term: str) -> bool:
    """The term's first letter heard, or in a long term only that letter missing, all else
    exact; never another letter in its place ("cubernetes" for "Kubernetes" is only flagged,
    "translated" stays "translated" beside "CTranslate2")."""
    return heard[:1] == term[:1] or (len(term) >= DROPPED_LEAD_LETTERS and heard == term[1:])


def _plausible(window: _Window, cores: list[str], term_letters: str) -> bool:
    """About as long as the term, and not only common words."""
    words = [c.casefold() for c in cores[window.first:window.end]]
    return (abs(len(window.letters) - len(term_letters)) <= LENGTH_SLACK * len(term_letters)
            and not all(w in _COMMON for w in words))


def check_terms(text: str, terms: tuple[str, ...]) -> Checked:
    """`text` with the vocabulary's near misses corrected where safe; what changed and what
    a person should check, as readable lines."""
    tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
    if not tokens or not terms:
        return Checked(text)
    parts = [_split(text[a:b]) for a, b in tokens]
    cores = [core for _, core, _ in parts]
    term_letters = [_letters(t) for t in terms]
    sizes = {max(1, n + d) for t in terms for n in [len(t.split())] for d in (-1, 0, 1)}
    windows = [w for w in _windows(cores, sizes) if w.letters]
    if not windows:
        return Checked(text)
    scores = process.cdist([w.letters for w in windows], term_letters, scorer=fuzz.ratio,
                           score_cutoff=NOTICE_AT, workers=1)
    found = sorted(((float(scores[i, j]), i, j) for i, j in zip(*np.nonzero(scores))),
                   key=lambda f: (-f[0], windows[f[1]].first))
    taken = np.zeros(len(tokens), dtype=bool)
    replacements: list[tuple[_Window, str]] = []  # in text order, once sorted
    notices: list[tuple[int, str]] = []
    for score, i, j in found:
        window, term, letters = windows[i], terms[j], term_letters[j]
        if taken[window.first:window.end].any():
            continue
        heard = " ".join(cores[window.first:window.end])
        if heard == term:
            taken[window.first:window.end] = True  # already right: nothing else may claim it
        elif window.letters == letters or (score >= CORRECT_AT and _same_start(window.letters, letters)
                                           and _plausible(window, cores, letters)):
            taken[window.first:window.end] = True
            replacements.append((window, term))
        elif _plausible(window, cores, letters):
            taken[window.first:window.end] = True
            notices.append((window.first, f"vocabulary: {heard!r} may be {term!r}"))
    replacements.sort(key=lambda r: r[0].first)
    return Checked(_replaced(text, tokens, parts, replacements),
                   [f"{' '.join(cores[w.first:w.end])!r} -> {term!r}" for w, term in replacements],
                   [notice for _, notice in sorted(notices)])


def _replaced(text: str, tokens: list[tuple[int, int]], parts: list[tuple[str, str, str]],
              replacements: list[tuple[_Window, str]]) -> str:
    """`text` with each window's words replaced by its term, the punctuation before its
    first word and after its last kept."""
    pieces, position = [], 0
    for window, term in replacements:
        start, end = tokens[window.first][0], tokens[window.end - 1][1]
        lead, tail = parts[window.first][0], parts[window.end - 1][2]
        pieces += [text[position:start], lead, term, tail]
        position = end
    return "".join(pieces) + text[position:]
