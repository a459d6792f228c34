"""The `narrate-manifest` flow end to end with the embedded model (Piper) and a real Prefect
API: round trip through the transcription flow (Whisper), speed, clean joins, outputs.

The embedded voice is deterministic (Piper's sampling noise is off), so these figures repeat
run to run. The round trip of the three whole shared texts (~17 minutes of speech, issue 4's
8% bar) is measured by benchmarks/round_trip.py; here a 200-word passage carries the same bar
(test_speed_...), and the outputs are checked on shorter texts cut into several requests.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import pytest_asyncio

from audiobatch.tasks.audio.codecs import decode
from tests.helpers.data import TEXTS, spoken_text
from tests.helpers.e2e import (RunResult, corpus_wer, run_narrate, run_transcribe,
                               write_manifest)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_api")]

RATE = 24000  # what narrations are rendered at
NARRATED = {  # item id -> (text file, format)
    "lj001": ("ljspeech_LJ001.txt", "flac"),
    "notes": ("show_notes.md", "mp3"),
    "sentence": ("long_sentence.txt", "wav"),
}
DESIGN_COLUMNS = "run_id item_id audio_path format voice speed duration_s n_chunks"


async def transcribe_files(paths: dict[str, str], folder: Path) -> dict[str, str]:
    """item id -> transcript, through the transcription flow with the embedded model."""
    manifest = write_manifest(folder / "narrated.csv",
                              [{"id": item_id, "audio": path} for item_id, path in paths.items()])
    run = await run_transcribe(manifest, folder / "transcripts")
    transcripts = run.dataset("transcripts")
    return dict(zip(transcripts["item_id"], transcripts["text"]))


def first_sentences(name: str, words: int) -> str:
    """The text's sentences up to about `words` words."""
    text = spoken_text(name)
    cut = text.find(". ", len(" ".join(text.split()[:words]))) + 1
    return text[:cut]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def narrated(prefect_api: None, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    folder = tmp_path_factory.mktemp("narrate")
    passage = folder / "lj001-start.txt"
    passage.write_text(first_sentences("ljspeech_LJ001.txt", 400), encoding="utf-8")
    texts = {"lj001": passage, "notes": TEXTS / NARRATED["notes"][0],
             "sentence": TEXTS / NARRATED["sentence"][0]}
    rows = [{"id": item_id, "text_file": str(texts[item_id]), "format": fmt, "title": f"Title {item_id}"}
            for item_id, (_, fmt) in NARRATED.items()]
    # Without verification and captions (tested elsewhere); ~1 min requests, so that the
    # 400 words go out in several and are joined back.
    return await run_narrate(write_manifest(folder / "texts.csv", rows), folder / "out",
                             verify=False, captions=False, max_audio_tokens=1200)


# --- outputs ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_narrations_are_written_with_their_format_title_and_loudness(narrated: RunResult) -> None:
    narrations = narrated.dataset("narrations")
    assert set(DESIGN_COLUMNS.split()) <= set(narrations.columns)
    assert narrated.statuses() == {item_id: "ok" for item_id in NARRATED}
    for row in narrations.to_dict("records"):
        path = Path(row["audio_path"])
        assert path.suffix == "." + NARRATED[row["item_id"]][1] == "." + row["format"]
        with av.open(str(path)) as container:
            assert container.metadata.get("title", container.streams.audio[0].metadata.get("title")) \
                == f"Title {row['item_id']}"
        samples = decode(path, RATE)
        assert len(samples) / RATE == pytest.approx(row["duration_s"], abs=0.1)
        assert row["loudness_lufs"] == pytest.approx(-16.0, abs=1.0)
    assert narrated.item("lj001", "narrations")["n_chunks"] >= 3  # 400 words, ~1 min requests
    costs = narrated.dataset("costs")
    assert len(costs) == narrations["n_chunks"].sum()
    assert (costs["completion_audio_tokens"] > 0).all() and (costs["http_status"] == 200).all()


# --- speed --------------------------------------------------------------------------------------

SHORT = "The quick brown fox jumps over the lazy dog, and then it runs away into the woods."


async def test_speed_changes_duration_not_words_and_bad_speeds_fail_per_row(tmp_path: Path) -> None:
    passage = tmp_path / "passage.txt"
    passage.write_text(first_sentences("ljspeech_LJ001.txt", 200), encoding="utf-8")
    rows = [{"id": "normal", "text_file": str(passage), "speed": "1.0"},
            {"id": "faster", "text_file": str(passage), "speed": "1.5"},
            {"id": "short", "text": SHORT, "speed": "1.0"},
            {"id": "slowest", "text": SHORT, "speed": "0.25"},
            {"id": "fastest", "text": SHORT, "speed": "4.0"},
            {"id": "too-fast", "text": SHORT, "speed": "5"}]
    # One at a time, so that the repeated texts come from the result cache: the same speech,
    # only the speed differs (and nothing is paid twice). Verification is tested elsewhere.
    run = await run_narrate(write_manifest(tmp_path / "speeds.csv", rows), tmp_path / "out",
                            audio_format="wav", concurrency=1, verify=False, captions=False)
    statuses = run.statuses()
    assert statuses.pop("too-fast") == "failed"
    assert set(statuses.values()) == {"ok"}
    bad = run.item("too-fast")
    assert "speed 5" in bad["error_message"] and "0.25" in bad["error_message"]
    assert "4.0" in bad["error_message"]

    narrations = run.dataset("narrations")
    duration = dict(zip(narrations["item_id"], narrations["duration_s"]))
    for item_id, base, speed in (("faster", "normal", 1.5), ("slowest", "short", 0.25),
                                 ("fastest", "short", 4.0)):
        print(f"speed {speed}: {duration[item_id]:.3f} s, expected {duration[base] / speed:.3f} s")
        assert duration[item_id] == pytest.approx(duration[base] / speed, rel=0.05), item_id
    costs = run.dataset("costs")
    assert costs.loc[costs["item_id"].isin(["faster", "slowest", "fastest"]), "cached"].all()

    paths = dict(zip(narrations["item_id"], narrations["audio_path"]))
    heard = await transcribe_files({i: paths[i] for i in ("normal", "faster")}, tmp_path)
    reference = passage.read_text(encoding="utf-8")
    normal = corpus_wer([reference], [heard["normal"]])
    faster = corpus_wer([reference], [heard["faster"]])
    print(f"{len(reference.split())} words: WER {normal:.2%} at speed 1.0, {faster:.2%} at 1.5")
    # Fast speech is harder for Whisper tiny.en, stretched or synthesised fast. With pauses
    # shortened more than speech, speed 1.5 costs +1.5 points over all three shared texts (3,600
    # words, docs/performance.md "Speed": issue 14's "within 2 points of 1.0" is met there), but +3.4 on these
    # 205 words (7 words; the chapter's start is its hardest part at 1.5, and one word is half a
    # point). So at 1.5 this asserts what a broken stretch (dropped or garbled audio) would
    # exceed: at most 6 points (12 words here) over speed 1.0.
    assert normal <= 0.08
    assert faster <= normal + 0.06


# --- joins --------------------------------------------------------------------------------------

EDGE = int(0.002 * RATE)  # a click lives in the few samples where speech meets a pause


def pauses(samples: np.ndarray, min_s: float = 0.3) -> list[tuple[int, int]]:
    """Runs of exact digital silence of at least min_s: the pauses stitched between chunks
    (the voice's own pauses are never exactly zero for that long)."""
    zero = np.concatenate([[False], samples == 0, [False]]).astype(np.int8)
    starts, ends = np.flatnonzero(np.diff(zero) == 1), np.flatnonzero(np.diff(zero) == -1)
    return [(s, e) for s, e in zip(starts, ends) if e - s >= min_s * RATE]


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def typical_step(speech: np.ndarray) -> float:
    """Median, over voiced 2 ms windows, of the largest sample-to-sample step in the window."""
    n = (len(speech) - 1) // EDGE * EDGE
    steps = np.abs(np.diff(speech))[:n].reshape(-1, EDGE).max(axis=1)
    rms = np.sqrt((speech[:n].reshape(-1, EDGE) ** 2).mean(axis=1))
    return float(np.median(steps[rms > 10 ** (-35 / 20)]))


async def test_chunk_joins_have_no_click_louder_than_the_speech_around_them(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv",
                              [{"id": "joined", "text_file": str(TEXTS / "long_sentence.txt")}])
    # 500 audio tokens = 25 s per request: the 243-word sentence needs four requests
    run = await run_narrate(manifest, tmp_path / "out", audio_format="wav", max_audio_tokens=500,
                            verify=False, captions=False)  # the joins alone (both tested elsewhere)
    narration = run.item("joined", "narrations")
    samples = decode(Path(narration["audio_path"]), RATE)
    joins = pauses(samples)
    assert narration["n_chunks"] >= 3 and len(joins) == narration["n_chunks"] - 1
    for start, end in joins:
        around = np.concatenate([samples[max(0, start - 2 * RATE):start], samples[end:end + 2 * RATE]])
        limit = typical_step(around)
        into_pause = np.abs(np.diff(samples[start - EDGE:start + 1])).max()
        out_of_pause = np.abs(np.diff(samples[end - 1:end + EDGE])).max()
        assert max(into_pause, out_of_pause) <= limit, (start / RATE, into_pause, out_of_pause, limit)
        edges = np.concatenate([samples[start - EDGE:start], samples[end:end + EDGE]])
        assert rms(edges) <= rms(around)  # quieter at the edges than the speech
