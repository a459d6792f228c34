"""Who speaks each word and segment, from an item's turns (who spoke when): segments split
where the speaker changes, the RTTM file and the `speakers` dataset's rows.

Turns are (start_s, end_s, speaker) on the recording's timeline, speakers numbered from 0 in
order of first appearance (`SpeakerFinder`); they are named SPEAKER_1, SPEAKER_2... A word
belongs to the speaker whose turns cover most of it; a word in a gap between turns (a soft
onset, a breath) to the nearest turn.
"""
from __future__ import annotations

from dataclasses import replace
from itertools import groupby
from pathlib import Path
from typing import Protocol

import numpy as np

from audiobatch.tasks.captions.segments import Segment
from audiobatch.tasks.captions.words import Word

Turn = tuple[float, float, int]


class SpeakerFinder(Protocol):
    """Finds who spoke when in a recording (the embedded diarization engine: flows/runtime.py
    wires it; tasks never import it). `id` names the engine and its settings (cache keys)."""

    id: str

    async def turns(self, path: Path, num_speakers: int | None, label: str) -> list[Turn]: ...


def speaker_name(index: int) -> str:
    return f"SPEAKER_{index + 1}"


class Speakers:
    """An item's turns, asked by time."""

    def __init__(self, turns: list[Turn]) -> None:
        self.turns = sorted(turns)
        self.starts = np.array([t[0] for t in self.turns], np.float64)
        self.ends = np.array([t[1] for t in self.turns], np.float64)
        self.who = np.array([t[2] for t in self.turns], np.int64)

    def at(self, start_s: float, end_s: float) -> str | None:
        """The speaker of [start_s, end_s]: most covered, else nearest; None without turns."""
        if not self.turns:
            return None
        covered = np.clip(np.minimum(self.ends, end_s) - np.maximum(self.starts, start_s), 0, None)
        if covered.max() > 0:
            per_speaker = np.bincount(self.who, weights=covered)
            return speaker_name(int(np.argmax(per_speaker)))
        middle = (start_s + end_s) / 2
        distance = np.maximum(self.starts - middle, middle - self.ends)
        return speaker_name(int(self.who[int(np.argmin(distance))]))


def labelled_segments(segments: list[Segment], speakers: Speakers) -> list[Segment]:
    """Each segment with its speaker; a segment with aligned words is split where the
    speaker changes (a caption never holds two voices). Without word times a segment takes
    the speaker of most of its time."""
    labelled: list[Segment] = []
    for segment in segments:
        if not segment.words:
            labelled.append(replace(segment, speaker=speakers.at(segment.start_s, segment.end_s)))
            continue
        runs = [(who, list(words)) for who, words in
                groupby(segment.words, key=lambda w: speakers.at(w.start_s, w.end_s))]
        if len(runs) == 1:
            labelled.append(replace(segment, speaker=runs[0][0]))
            continue
        for i, (who, words) in enumerate(runs):
            labelled.append(_part(segment, words, who, first=i == 0, last=i == len(runs) - 1))
    return labelled


def _part(segment: Segment, words: list[Word], speaker: str | None, first: bool, last: bool) -> Segment:
    """One speaker's words of a segment, as a segment of their own."""
    return replace(segment, start_s=segment.start_s if first else words[0].start_s,
                   end_s=segment.end_s if last else words[-1].end_s,
                   text=" ".join(w.word.strip() for w in words), words=tuple(words), lines=(),
                   speaker=speaker)  # lines: wrapped afresh


def labelled_word_rows(rows: list[dict], speakers: Speakers) -> list[dict]:
    """`words` rows (on the recording's timeline) with their speaker."""
    return [{**row, "speaker": speakers.at(row["start_s"], row["end_s"])} for row in rows]


def render_rttm(item_id: str, turns: list[Turn]) -> str:
    """NIST RTTM, the format diarization tools exchange: one SPEAKER line per turn."""
    return "".join(f"SPEAKER {item_id} 1 {start:.3f} {end - start:.3f} <NA> <NA> "
                   f"{speaker_name(who)} <NA> <NA>\n" for start, end, who in sorted(turns))


def speaker_rows(run_id: str, item_id: str, turns: list[Turn]) -> list[dict]:
    """The `speakers` dataset: per speaker its seconds of speech, turns and first time heard."""
    rows = []
    for who in sorted({t[2] for t in turns}):
        own = [t for t in turns if t[2] == who]
        rows.append({"run_id": run_id, "item_id": item_id, "speaker": speaker_name(who),
                     "seconds": round(sum(end - start for start, end, _ in own), 3),
                     "turns": len(own), "first_s": round(min(start for start, _, _ in own), 3)})
    return rows
