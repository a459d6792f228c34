"""Broadcast captions: cues built from timed words by the rules subtitle users expect.

The rules (Netflix's English timed-text style guide and the BBC subtitle guidelines), each a
field of `CaptionRules`:
- at most `line_chars` (42) characters a line and `lines` (2) lines a cue, as few lines as fit;
- a cue stays on screen `min_s` (1) to `max_s` (7) seconds, `gap_s` (2 frames at 25 fps) clear
  of the next one;
- at most `cps` (20; the `children` preset: 17) characters a second, spaces included;
- lines and cues break at phrase boundaries: after punctuation or before a conjunction or
  preposition, never after an article, a preposition, a conjunction, a possessive or an
  auxiliary, nor inside a name; the lines of a cue are balanced (bottom-heavy if anything).

How a cue is timed: it appears with its first word (never before the speech) and lasts until
its last word ends, lengthened into the silence after it as far as `min_s` and `cps` need, never
into the next cue's gap nor past `max_s`. Which words make a cue is chosen by dynamic
programming over the word boundaries: breaking a rule costs far more than any choice of break,
so every rule holds whenever some split keeps them all; where none can (speech faster than
`cps` between two pauses, a word longer than a line), the split breaking them least is taken.

The phrase rules know English function words; other languages get punctuation and balance.
Speakers: a `CueWord.speaker` change always ends a cue (issue 25 labels them), and a cue
carries its speaker.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.text.speakable import CLAUSE, PARAGRAPH, SENTENCE


@dataclass(frozen=True)
class CaptionRules:
    line_chars: int = 42
    lines: int = 2
    min_s: float = 1.0
    max_s: float = 7.0
    cps: float = 20.0
    gap_s: float = 0.08  # two frames at 25 fps

    def __post_init__(self) -> None:
        checks = [(10 <= self.line_chars <= 80, "caption line length", self.line_chars, "10-80 characters"),
                  (1 <= self.lines <= 3, "caption lines", self.lines, "1-3"),
                  (0 < self.min_s <= 5, "shortest caption", self.min_s, "0-5 s"),
                  (self.min_s < self.max_s <= 30, "longest caption", self.max_s,
                   f"more than the shortest ({self.min_s} s), at most 30 s"),
                  (5 <= self.cps <= 60, "characters per second", self.cps, "5-60"),
                  (0 <= self.gap_s <= 1, "gap between captions", self.gap_s, "0-1 s")]
        for ok, what, value, allowed in checks:
            if not ok:  # NaN fails every comparison
                raise ConfigError(f"{what} {value} is outside {allowed}")

    @property
    def max_chars(self) -> int:
        return self.line_chars * self.lines


PRESETS = {"broadcast": CaptionRules(), "children": CaptionRules(cps=17.0)}


def caption_rules(preset: str = "broadcast", *, line_chars: int | None = None,
                  lines: int | None = None, min_s: float | None = None, max_s: float | None = None,
                  cps: float | None = None) -> CaptionRules:
    """A preset's rules with any limit the user set in place of the preset's."""
    if preset not in PRESETS:
        raise ConfigError(f"caption preset {preset!r}: choose {' or '.join(PRESETS)}")
    base = PRESETS[preset]
    chosen = {"line_chars": line_chars, "lines": lines, "min_s": min_s, "max_s": max_s, "cps": cps}
    return CaptionRules(**{**base.__dict__, **{k: v for k, v in chosen.items() if v is not None}})


def rules_for(options: Any) -> CaptionRules:
    """The rules a run's options choose (tasks.run.context.RunOptions' caption_* fields)."""
    return caption_rules(options.caption_preset, line_chars=options.caption_line_chars,
                         lines=options.caption_lines, min_s=options.caption_min_s,
                         max_s=options.caption_max_s, cps=options.caption_cps)


@dataclass(frozen=True)
class CueWord:
    """One word as it appears in a caption: its text (punctuation attached), what stands
    before it in the text (a space, or nothing in scripts written without spaces), its time,
    the strength of the text's break after it (tasks.text.speakable: WORD..PARAGRAPH)."""

    text: str
    start_s: float
    end_s: float
    strength: int
    before: str = " "
    speaker: str | None = None


@dataclass(frozen=True)
class Cue:
    first: int  # words[first:end]
    end: int
    start_s: float
    end_s: float
    text: str  # the words as the text has them, on one line
    lines: tuple[str, ...]


# --- where a line or a cue may break ---------------------------------------------------------

# English words a line should not end with: what they introduce belongs with them.
_GLUE = frozenset("""a an the of to in on at by for with from into onto upon about over under
after before between through during without within against among across behind beyond like
than via per and but or nor if because although though while whereas unless until whether
my your his her its our their whose this these those is are was were be been being am has have
had do does did will would shall should can could may might must not no very mr mrs ms dr prof
st mt""".split())
# Words a line may well start with: a conjunction or preposition opens a phrase.
_LEADS = frozenset("""and but or nor so yet because although though while whereas unless until
whether if when where which who whom whose that of to in on at by for with from into about
after before between through during without within against among across""".split())
_CORE = re.compile(r"[^\w'’-]+")


def _core(word: str) -> str:
    return _CORE.sub("", word).lower()


def break_cost(word: CueWord, following: CueWord) -> float:
    """How bad a line or cue break between these two words reads (0: at a sentence end)."""
    if word.strength >= SENTENCE:
        return 0.0
    if word.strength >= CLAUSE:
        return 1.0
    cost = 3.0
    if _core(word.text) in _GLUE:
        cost += 10.0  # worse than a cue across a short pause (the aligner may leave one after "the")
    elif _core(following.text) in _LEADS:
        cost -= 1.5
    if word.text[:1].isupper() and following.text[:1].isupper():
        cost += 3.0  # inside a name: "Ada / Lovelace"
    return cost


# --- lines and cues ---------------------------------------------------------------------------------

VIOLATION = 1000.0  # per rule broken, plus per second short: more than any choice of break
CUE_COST = 2.0  # each cue: fewer, fuller cues unless a break is worth it
PAUSE_S = 0.4  # a pause this long inside a cue costs more than most breaks (a cue should end)
SENTENCE_INSIDE = 2.5  # a sentence per cue where timing allows (BBC), more than a new cue costs
# More words than this make no readable cue (20 characters a second: ~7 s), and the bound keeps
# the work per word fixed whatever a reply holds ("a a a a ..." would fill lines with words).
MAX_CUE_WORDS = 24


class _Words:
    """The words with what cue and line choices need in O(1): widths by prefix sums, the
    cost of the gaps a cue would span, break costs."""

    def __init__(self, words: list[CueWord]) -> None:
        self.words = words
        self.offset = [0]  # offset[i]: characters before word i, in the joined text
        for w in words:
            self.offset.append(self.offset[-1] + len(w.before) + len(w.text))
        self.breaks = [break_cost(a, b) for a, b in zip(words, words[1:])]
        spans = [0.0]  # spans[i]: what spanning the gaps after words 0..i-1 costs
        for a, b in zip(words, words[1:]):
            pause = b.start_s - a.end_s
            spans.append(spans[-1] + (8.0 + 4.0 * pause if pause >= PAUSE_S else 0.0)
                         + (SENTENCE_INSIDE if a.strength >= SENTENCE else 0.0))
        self.spans = spans

    def width(self, first: int, end: int) -> int:
        return self.offset[end] - self.offset[first] - len(self.words[first].before)

    def inside(self, first: int, end: int) -> float:
        return self.spans[end - 1] - self.spans[first]

    def must_break(self, i: int) -> bool:
        """A cue ends after word i: a paragraph ends or another speaker starts."""
        a, b = self.words[i], self.words[i + 1]
        return a.strength >= PARAGRAPH or a.speaker != b.speaker

    def text(self, first: int, end: int) -> str:
        words = self.words
        return words[first].text + "".join(w.before + w.text for w in words[first + 1:end])


class _LineSplits:
    """The best lines of any run of words, remembered: `best(first, end)` for a cue, from the
    best splits of its beginnings into one line fewer (each computed once per build, so three
    lines cost about what two do)."""

    def __init__(self, words: _Words, rules: CaptionRules) -> None:
        self.words, self.rules = words, rules
        self._memo: dict[tuple[int, int, int], tuple[float, tuple[int, ...]] | None] = {}

    def forget_before(self, first: int) -> None:
        """Splits of runs starting before `first` are no longer asked for."""
        self._memo = {k: v for k, v in self._memo.items() if k[0] >= first}

    def best(self, first: int, end: int) -> tuple[float, tuple[int, ...]] | None:
        """(cost, first word of each later line) of words[first:end] in as few lines as fit,
        broken where `break_cost` allows and balanced; None when `lines` lines cannot hold
        them. Balance: the sum of squared line widths, less its least possible value."""
        total = self.words.width(first, end)
        line_chars = self.rules.line_chars
        if total <= line_chars:
            return 0.0, ()
        for count in range(2, min(self.rules.lines, end - first) + 1):
            split = self._split(first, end, count)
            if split is not None:
                return split[0] - 4 * total ** 2 / count / line_chars ** 2, split[1]
        return None

    def _split(self, first: int, end: int, count: int) -> tuple[float, tuple[int, ...]] | None:
        key = (first, end, count)
        if key not in self._memo:
            self._memo[key] = self._compute(first, end, count)
        return self._memo[key]

    def _compute(self, first: int, end: int, count: int) -> tuple[float, tuple[int, ...]] | None:
        words, line_chars = self.words, self.rules.line_chars
        if count == 1:
            width = words.width(first, end)
            return (4 * (width / line_chars) ** 2, ()) if width <= line_chars else None
        best: tuple[float, tuple[int, ...]] | None = None
        for cut in range(end - 1, first + count - 2, -1):  # the last line: words[cut:end]
            last = words.width(cut, end)
            if last > line_chars:
                break
            head = self._split(first, cut, count - 1)
            if head is None:
                continue
            cost = head[0] + 4 * (last / line_chars) ** 2 + words.breaks[cut - 1]
            if count == 2 and words.width(first, cut) > last:
                cost += 0.3  # a top-heavy pair reads worse than a bottom-heavy one
            if best is None or cost < best[0]:
                best = (cost, (*head[1], cut))
        return best


def _lines(words: _Words, first: int, end: int, cuts: tuple[int, ...],
           rules: CaptionRules) -> tuple[str, ...]:
    if end - first == 1 and words.width(first, end) > rules.line_chars:
        text = words.text(first, end)  # one word longer than a line (a URL): cut it
        return tuple(text[i:i + rules.line_chars] for i in range(0, len(text), rules.line_chars))
    bounds = [first, *cuts, end]
    return tuple(words.text(a, b) for a, b in zip(bounds, bounds[1:]))


def _timing(words: _Words, first: int, end: int, rules: CaptionRules,
            end_limit_s: float) -> tuple[float, float, float]:
    """(start, end, shortfall): shortfall is the seconds missing to meet `min_s` and `cps`,
    plus speech left out by `max_s`."""
    ws = words.words
    start, spoken_end = ws[first].start_s, ws[end - 1].end_s
    room = ws[end].start_s - rules.gap_s if end < len(ws) else end_limit_s
    need = max(rules.min_s, words.width(first, end) / rules.cps)
    finish = max(start, min(max(spoken_end, start + need), room, start + rules.max_s))
    shortfall = max(0.0, need - (finish - start)) + max(0.0, spoken_end - finish - rules.gap_s)
    return start, finish, shortfall


def build_cues(words: list[CueWord], rules: CaptionRules, end_limit_s: float | None = None) -> list[Cue]:
    """The cues of a run of words (in time order) under `rules`; `end_limit_s`: how long the
    last cue may stay (the recording's end; default: its last word's end + max_s)."""
    if not words:
        return []
    ws = _Words(_monotonic(words))
    splits = _LineSplits(ws, rules)
    n = len(words)
    limit = end_limit_s if end_limit_s is not None else ws.words[-1].end_s + rules.max_s
    best = [0.0] + [math.inf] * n  # best[e]: the cheapest cues of words[:e]
    choice: list[tuple[int, tuple[int, ...], float, float]] = [(0, (), 0.0, 0.0)] * (n + 1)
    for end in range(1, n + 1):
        tail = 0.0 if end == n or ws.must_break(end - 1) else ws.breaks[end - 1]
        if end % 256 == 0:
            splits.forget_before(end - MAX_CUE_WORDS)
        for first in range(end - 1, max(-1, end - 1 - MAX_CUE_WORDS), -1):
            if first < end - 1 and (ws.must_break(first) or ws.width(first, end) > rules.max_chars):
                break  # a cue never spans a paragraph end or a change of speaker
            lines = splits.best(first, end)
            if lines is None and end - first > 1:
                continue
            line_cost, cuts = lines if lines is not None else (VIOLATION, ())
            start, finish, shortfall = _timing(ws, first, end, rules, limit)
            cost = (best[first] + CUE_COST + ws.inside(first, end) + line_cost + tail
                    + (VIOLATION * (1 + shortfall) if shortfall > 1e-9 else 0.0))
            if cost < best[end]:
                best[end], choice[end] = cost, (first, cuts, start, finish)
    cues, end = [], n
    while end > 0:
        first, cuts, start, finish = choice[end]
        cues.append(Cue(first, end, start, finish, ws.text(first, end),
                        _lines(ws, first, end, cuts, rules)))
        end = first
    return cues[::-1]


def _monotonic(words: list[CueWord]) -> list[CueWord]:
    """Starts and ends never going back, no word ending before it starts (estimates from
    overlapping chunks can cross by a fraction of a second)."""
    fixed: list[CueWord] = []
    for word in words:
        start = max(word.start_s, fixed[-1].start_s) if fixed else word.start_s
        end = max(word.end_s, start, fixed[-1].end_s if fixed else start)
        fixed.append(replace(word, start_s=start, end_s=end))
    return fixed
