"""Who speaks each word, from an item's turns (who spoke when), the RTTM file and the
`speakers` dataset's rows. Captions take their words' speakers: the cue builder ends a cue
where the speaker changes (tasks/captions/segments.py `speaker_at`).

Turns are (start_s, end_s, speaker) on the recording's timeline, speakers numbered from 0 in
order of first appearance (`SpeakerFinder`); they are named SPEAKER_1, SPEAKER_2... A word
belongs to the speaker whose turns cover most of it; a word in a gap between turns (a soft
onset, a breath) to the nearest turn.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

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
