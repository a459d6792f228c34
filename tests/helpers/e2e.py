"""Shared helpers for end-to-end tests that run the real flows: write a manifest, run a flow,
read its Parquet outputs back, build test recordings, score transcripts.

Flows run for real (Prefect API from the session `prefect_api` fixture, embedded model
in-process); nothing here is mocked.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import pandas as pd
import soundfile as sf
from whisper_normalizer.english import EnglishTextNormalizer

from audiobatch.tasks.audio.codecs import decode
from audiobatch.tasks.options import NarrateOptions, TranscribeOptions

_NORMALISE = EnglishTextNormalizer()


# --- manifests and flows -------------------------------------------------------------------

def write_manifest(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """A CSV manifest with the union of the rows' keys as its header (first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


@dataclass
class RunResult:
    """A finished run: the flow's summary and its output root."""

    summary: dict[str, Any]
    out: Path

    def dataset(self, name: str) -> pd.DataFrame:
        """This run's rows of one dataset, read the way a user would (`pd.read_parquet(dir)`)."""
        frame = read_dataset(self.out, name)
        return frame[frame["run_id"] == self.summary["run_id"]].reset_index(drop=True)

    def item(self, item_id: str, dataset: str = "items") -> dict[str, Any]:
        rows = self.dataset(dataset)
        matches = rows[rows["item_id"] == item_id]
        assert len(matches) == 1, f"{item_id}: {len(matches)} rows in {dataset}"
        return matches.iloc[0].to_dict()

    def statuses(self) -> dict[str, str]:
        items = self.dataset("items")
        return dict(zip(items["item_id"], items["status"]))


def read_dataset(out: Path, name: str) -> pd.DataFrame:
    folder = out / name
    assert folder.is_dir(), f"no {name} dataset under {out}: {sorted(p.name for p in out.iterdir())}"
    return pd.read_parquet(folder)


def all_files_text(folder: Path) -> str:
    """Every file under `folder` as text (bytes as latin-1): for "this never reaches disk" checks."""
    return "\n".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


async def run_transcribe(manifest: Path, out: Path, **options: Any) -> RunResult:
    """Run the `transcribe-manifest` flow for real; progress bar off unless asked."""
    from audiobatch.flows.common import summary_of
    from audiobatch.flows.transcribe import transcribe_manifest

    options.setdefault("progress", False)
    summary = await summary_of(await transcribe_manifest(manifest=str(manifest), out=str(out),
        options=TranscribeOptions.from_flat(**options), return_state=True))
    return RunResult(summary, out)


async def run_narrate(manifest: Path, out: Path, **options: Any) -> RunResult:
    """Run the `narrate-manifest` flow for real; progress bar off unless asked."""
    from audiobatch.flows.common import summary_of
    from audiobatch.flows.narrate import narrate_manifest

    options.setdefault("progress", False)
    summary = await summary_of(await narrate_manifest(manifest=str(manifest), out=str(out),
        options=NarrateOptions.from_flat(**options), return_state=True))
    return RunResult(summary, out)


# --- scoring -------------------------------------------------------------------------------

_BRACKETS = re.compile(r"[()\[\]{}<>]")


def normalise(text: str) -> str:
    """Whisper's English normalisation: case, punctuation, spelled-out numbers, spellings.

    Brackets become spaces first: Whisper's normaliser deletes whatever stands in brackets
    (it takes "(laughs)" for an annotation), but in our texts bracketed words are read aloud.
    """
    return _NORMALISE(_BRACKETS.sub(" ", text))


def corpus_wer(references: Iterable[str], hypotheses: Iterable[str], *, digits: bool = False) -> float:
    """Word error rate over a whole corpus (errors summed over all words), normalised
    (`digits`: and digit strings written digit by digit, `digits_one_by_one`)."""
    score = digits_one_by_one if digits else normalise
    return float(jiwer.wer([score(r) for r in references], [score(h) for h in hypotheses]))


def digits_one_by_one(text: str) -> str:
    """`normalise(text)` with every number written digit by digit, and a digit's name beside
    another digit written as that digit (`tasks.transcription.bounds.digits_one_by_one`, as
    QA compares texts). Whisper's normaliser makes one number of a spoken digit string: the
    reference "one zero zero zero one nine oh two ..." becomes "100019021001803", so a
    transcript that writes the digits as they were said ("1 0 0 0 1 9 ...") scores 14 errors
    in 15 words and one that joins them wrongly ("10001 90210 1803") scores 3. Digit by
    digit, each digit said counts once."""
    from audiobatch.tasks.transcription.bounds import digits_one_by_one as split_digits

    return " ".join(split_digits(normalise(text).split()))


def engine_transcript(path: Path) -> str:
    """The embedded engine's own single pass over a whole file: no chunking, no loudness,
    no HTTP - decoded at 16 kHz and handed straight to faster-whisper."""
    from audiobatch.localmodel.engines import WHISPER_SAMPLE_RATE, shared_engines

    samples = decode(path, WHISPER_SAMPLE_RATE, label=path.name)
    return shared_engines().transcribe_blocking(samples)


# --- test recordings -------------------------------------------------------------------------

@dataclass(frozen=True)
class Concatenation:
    """A recording made of known clips separated by known silences."""

    path: Path
    starts_s: list[float]  # where each clip begins in the recording
    duration_s: float


def concatenate_clips(clips: Sequence[Path], gaps_s: Sequence[float], path: Path,
                      rate: int = 16000, lead_s: float = 0.5) -> Concatenation:
    """Write clips[0], gap[0] of silence, clips[1], ... as a 16-bit wav; record clip starts.

    A little low-level noise is added to the silences so that they look like a room, not
    digital zero (the assembler must find pauses by level, not by exact zeros).
    """
    assert len(gaps_s) == len(clips) - 1
    rng = np.random.default_rng(7)
    pieces, starts, position = [room_tone(rng, lead_s, rate)], [], round(lead_s * rate)
    for index, clip in enumerate(clips):
        samples = decode(clip, rate, label=clip.name)
        starts.append(position / rate)
        pieces.append(samples)
        position += len(samples)
        if index < len(gaps_s):
            pieces.append(room_tone(rng, gaps_s[index], rate))
            position += len(pieces[-1])
    audio = np.concatenate(pieces)
    sf.write(path, audio, rate, subtype="PCM_16")
    return Concatenation(path, starts, len(audio) / rate)


def room_tone(rng: np.random.Generator, seconds: float, rate: int) -> np.ndarray:
    return (rng.standard_normal(round(seconds * rate)) * 3e-4).astype(np.float32)  # ~ -70 dBFS
