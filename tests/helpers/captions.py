"""Caption files as a viewer gets them, and the broadcast rules checked cue by cue
(tasks/captions/cues.py says the rules; tests/test_captions.py and the end-to-end tests use this)."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

from audiobatch.tasks.captions.cues import CaptionRules

_TIME = r"(\d\d):(\d\d):(\d\d)[,.](\d{3})"
_TIMING = re.compile(f"{_TIME} --> {_TIME}")
# What a line should not end with (a sample of tasks.captions.cues' function words).
ARTICLES_AND_PREPOSITIONS = frozenset("a an the of to in on at by for with from into".split())


@dataclass(frozen=True)
class ShownCue:
    start_s: float
    end_s: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)


def parse_captions(document: str) -> list[ShownCue]:
    """The cues of an SRT or WebVTT file (numbers, header and voice spans dropped)."""
    cues = []
    for block in document.strip("\n").split("\n\n"):
        lines = block.split("\n")
        timing = next((i for i, line in enumerate(lines) if _TIMING.fullmatch(line)), None)
        if timing is None:
            continue  # the WEBVTT header
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, _TIMING.fullmatch(lines[timing]).groups())
        text = [html.unescape(re.sub(r"<v [^>]*>", "", line)) for line in lines[timing + 1:]]
        cues.append(ShownCue(h1 * 3600 + m1 * 60 + s1 + ms1 / 1000,
                             h2 * 3600 + m2 * 60 + s2 + ms2 / 1000, tuple(text)))
    return cues


def _last_word(line: str) -> str:
    words = re.findall(r"[\w']+", line.lower())
    return words[-1] if words else ""


def rule_breaks(cues: list[ShownCue], rules: CaptionRules, slack_s: float = 0.0015) -> list[str]:
    """Every broken rule of every cue, as readable lines (empty: all kept). Times in files are
    whole milliseconds, hence `slack_s`."""
    problems = []
    for k, cue in enumerate(cues):
        duration = cue.end_s - cue.start_s
        chars = len(cue.text)
        if len(cue.lines) > rules.lines:
            problems.append(f"cue {k}: {len(cue.lines)} lines")
        for line in cue.lines:
            if len(line) > rules.line_chars:
                problems.append(f"cue {k}: line of {len(line)} characters: {line!r}")
            if not line.strip():
                problems.append(f"cue {k}: an empty line")
        if duration < rules.min_s - slack_s or duration > rules.max_s + slack_s:
            problems.append(f"cue {k}: on screen {duration:.3f} s")
        if chars > rules.cps * duration + slack_s * rules.cps:
            problems.append(f"cue {k}: {chars / duration:.1f} characters a second")
        if k and cue.start_s < cues[k - 1].end_s + rules.gap_s - slack_s:
            problems.append(f"cue {k}: starts {cue.start_s - cues[k - 1].end_s:.3f} s after the last")
    return problems


def breaks_after_function_words(cues: list[ShownCue]) -> list[str]:
    """Lines (and cues) that end with an article or preposition: "the / dog"."""
    return [line for cue in cues for line in cue.lines
            if _last_word(line) in ARTICLES_AND_PREPOSITIONS]
