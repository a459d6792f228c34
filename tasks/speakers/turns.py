"""An item's speakers: one diarization of the whole recording (so labels agree across its
chunks), cached with the run's results (so a re-run from cache keeps them), then put on its
words and captions (tasks/captions/segments.py cuts a caption per speaker), with the RTTM
file and the `speakers` rows.

The cache entry's key hashes the recording's bytes, the engine's id and the setting ("auto"
or a number): `_cache/<k[:2]>/<k>.speakers.json`. An entry that cannot be read or has the wrong
shape is a miss (the output root is the operator's, but a damaged file must not crash a run).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from audiobatch.tasks.outputs.datasets import media_relpath
from audiobatch.tasks.run.cache import cache_key
from audiobatch.tasks.run.context import RunContext
from audiobatch.tasks.speakers.labels import Speakers, Turn, labelled_word_rows, render_rttm, speaker_rows

log = logging.getLogger("audiobatch")


@dataclass
class Labelled:
    """An item's speakers (asked by time: its captions are cut per speaker) and outputs."""

    speakers: Speakers
    words: list[dict]
    rows: list[dict]  # the `speakers` dataset
    rttm_path: str


def _entry(key: str) -> str:
    return f"_cache/{key[:2]}/{key}.speakers.json"


def _cached(ctx: RunContext, key: str) -> list[Turn] | None:
    if not ctx.cache.enabled or not ctx.out.exists(_entry(key)):
        return None
    try:
        entry = json.loads(ctx.out.read_bytes(_entry(key)))
        turns = [(float(start), float(end), int(who)) for start, end, who in entry["turns"]]
        if any(not 0 <= start <= end or who < 0 for start, end, who in turns):
            raise ValueError("a turn ends before it starts, or has no speaker")
        return turns
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring the damaged cache entry %s (%s); the speakers are found again",
                    ctx.out.display(_entry(key)), exc)
        return None


async def item_turns(ctx: RunContext, path: Path, setting: str, label: str) -> list[Turn]:
    """Who spoke when in the recording at `path`: from the cache, else from the engine.
    `setting`: "auto", or the number of speakers."""
    finder = ctx.speaker_finder
    key = cache_key(path, model=finder.id, endpoint="local", params={"speakers": setting})
    if (turns := _cached(ctx, key)) is not None:
        return turns
    turns = await finder.turns(path, None if setting == "auto" else int(setting), label)
    if ctx.cache.enabled:  # not fsync'd: a lost entry costs one diarization, not a wrong answer
        ctx.out.write_bytes(_entry(key), json.dumps({"engine": finder.id, "turns": turns}).encode(),
                            durable=False)
    return turns


def label_speakers(ctx: RunContext, item_id: str, turns: list[Turn], words: list[dict]) -> Labelled:
    """The item's speakers, its `words` rows (on the recording's timeline) with speakers, its
    RTTM file written beside its transcripts, and its `speakers` rows."""
    speakers = Speakers(turns)
    relative = media_relpath("transcripts", ctx.run_id, item_id, "rttm")
    ctx.out.write_bytes(relative, render_rttm(item_id, turns).encode("utf-8"), durable=False)
    return Labelled(speakers, labelled_word_rows(words, speakers),
                    speaker_rows(ctx.run_id, item_id, turns), ctx.out.display(relative))
