"""Speaker labels end to end: the transcribe flow on a recording of three readers built with
exact truth, sent in ~29 s requests, with a manifest's `speakers` column; hostile values of
that column; a re-run answered from the cache keeps the labels.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import pytest_asyncio

from tests.helpers.conversations import speaker_mapping, write_conversation
from tests.helpers.e2e import RunResult, run_transcribe, write_manifest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]
READERS = ["LJ", "Austen", "JFK"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    path = tmp_path_factory.mktemp("speakers") / "three.wav"
    return path, write_conversation(path, READERS, 70, seed=0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runs(recording: tuple[Path, list], tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, RunResult]:
    """The same job twice into one output root: the second run answers from the cache."""
    folder = tmp_path_factory.mktemp("speakers-run")
    path = str(recording[0])
    manifest = write_manifest(folder / "m.csv", [
        {"id": "three", "audio": path, "speakers": "auto"},
        {"id": "zero", "audio": path, "speakers": "0"},
        {"id": "many", "audio": path, "speakers": "1000"},
        {"id": "word", "audio": path, "speakers": "x"},
        {"id": "plain", "audio": path, "speakers": ""}])
    first = await run_transcribe(manifest, folder / "out", max_audio_tokens=300)
    second = await run_transcribe(manifest, folder / "out", max_audio_tokens=300, resume=False)
    return first, second


def _rttm_turns(path: str | Path, item_id: str = "three") -> list[tuple[float, float, str]]:
    turns = []
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        assert fields[0] == "SPEAKER" and fields[1] == item_id and len(fields) == 10
        turns.append((float(fields[3]), float(fields[3]) + float(fields[4]), fields[7]))
    return turns


def _clearly_inside(truth: list, time_s: float) -> str | None:
    """The true speaker at `time_s` when exactly one speaks there, 0.25 s from any edge."""
    holders = {who for start, end, who in truth if start - 0.25 <= time_s <= end + 0.25}
    inside = [who for start, end, who in truth if start + 0.25 <= time_s <= end - 0.25]
    return inside[0] if len(inside) == 1 and holders == set(inside) else None


async def test_every_word_gets_the_speaker_whose_turn_holds_it(
        runs: tuple[RunResult, RunResult], recording: tuple[Path, list]) -> None:
    first, _ = runs
    truth = recording[1]
    transcript = first.item("three", "transcripts")
    assert transcript["n_chunks"] >= 2  # labels must agree across the chunks
    found = _rttm_turns(transcript["rttm_path"])
    mapping = speaker_mapping(truth, found, 72.0)
    assert sorted(mapping.values()) == sorted(READERS)
    words = first.dataset("words")
    words = words[words["item_id"] == "three"]
    checked = [(mapping.get(w.speaker), expected) for w in words.itertuples()
               if (expected := _clearly_inside(truth, (w.start_s + w.end_s) / 2)) is not None]
    assert len(checked) >= 60
    right = sum(got == expected for got, expected in checked)
    assert right / len(checked) >= 0.95, f"{right} of {len(checked)} words"


async def test_segments_files_and_dataset_carry_the_speakers(runs: tuple[RunResult, RunResult]) -> None:
    first, _ = runs
    segments = first.dataset("segments")
    labelled = segments[segments["item_id"] == "three"]
    assert labelled["speaker"].notna().all() and labelled["speaker"].nunique() == 3
    words = first.dataset("words")
    for segment in labelled.itertuples():  # a segment holds one speaker's words
        inside = words[(words["item_id"] == "three") & (words["start_s"] >= segment.start_s - 0.01)
                       & (words["end_s"] <= segment.end_s + 0.01)]
        assert set(inside["speaker"]) <= {segment.speaker}
    assert segments[segments["item_id"] == "plain"]["speaker"].isna().all()  # not asked for
    speakers = first.dataset("speakers")
    assert set(speakers["item_id"]) == {"three"}
    assert sorted(speakers["speaker"]) == ["SPEAKER_1", "SPEAKER_2", "SPEAKER_3"]
    assert (speakers["seconds"] > 5).all() and (speakers["turns"] >= 1).all()
    transcript = first.item("three", "transcripts")
    vtt = Path(transcript["vtt_path"]).read_text()
    assert "<v SPEAKER_1>" in vtt and "<v SPEAKER_3>" in vtt
    assert "[SPEAKER_2]: " in Path(transcript["srt_path"]).read_text()
    document = json.loads(Path(transcript["json_path"]).read_text())
    assert all(s["speaker"].startswith("SPEAKER_") for s in document["segments"])
    assert all(w["speaker"] == s["speaker"] for s in document["segments"] for w in s["words"])
    assert "speaker" not in Path(first.item("plain", "transcripts")["json_path"]).read_text()


async def test_bad_speakers_values_fail_their_rows(runs: tuple[RunResult, RunResult]) -> None:
    first, _ = runs
    statuses = first.statuses()
    assert statuses == {"three": "ok", "plain": "ok", "zero": "failed", "many": "failed", "word": "failed"}
    for item_id, value, row in (("zero", "0", 3), ("many", "1000", 4), ("word", "x", 5)):
        message = first.item(item_id)["error_message"]
        assert message.startswith(f"row {row}: speakers '{value}' is not 'auto' or a number"), message


async def test_a_rerun_from_the_cache_keeps_the_labels(runs: tuple[RunResult, RunResult]) -> None:
    first, second = runs
    assert second.summary["run_id"] != first.summary["run_id"]
    costs = second.dataset("costs")
    assert costs["cached"].all()
    columns = ["segment_index", "start_s", "end_s", "text", "speaker"]
    pd.testing.assert_frame_equal(first.dataset("segments")[columns], second.dataset("segments")[columns])
    assert Path(first.item("three", "transcripts")["rttm_path"]).read_text() == \
        Path(second.item("three", "transcripts")["rttm_path"]).read_text()
    entries = list((first.out / "_cache").rglob("*.speakers.json"))
    assert len(entries) == 1  # one diarization of the recording, reused


async def test_the_run_report_shows_the_speakers(runs: tuple[RunResult, RunResult], tmp_path: Path) -> None:
    from audiobatch.flows.cli import main

    first, _ = runs
    page = tmp_path / "report.html"
    assert main(["report", "--html", str(page), str(first.out), first.summary["run_id"]]) == 0
    section = page.read_text().split("<h2>Speakers</h2>")[1].split("<h2>")[0]
    assert "1 items labelled by speaker" in section and "SPEAKER_3" in section


def _feed(enclosure: str, size: int) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Three Readers</title><link>https://example.org/show</link>
  <item><title>Round table</title><guid isPermaLink="false">round-table-1</guid>
    <pubDate>Mon, 07 Dec 2026 06:00:00 GMT</pubDate>
    <enclosure url="{enclosure}" length="{size}" type="audio/wav"/></item>
</channel></rss>
"""


def test_a_podcast_episode_gets_its_speakers(recording: tuple[Path, list], tmp_path: Path,
                                             allow_loopback_fetch: None) -> None:
    """`audiobatch podcast FEED --speakers 3`: the podcast job labels an episode (the
    three-reader recording as its enclosure, fetched over HTTP) as the transcribe job does."""
    import shutil

    from audiobatch.flows.cli import main
    from tests.helpers.feeds import FeedServer

    path, truth = recording
    out = tmp_path / "out"
    with FeedServer(tmp_path / "site") as site:
        shutil.copy(path, site.folder / "talk.wav")
        (site.folder / "feed.xml").write_text(_feed(site.url("talk.wav"), path.stat().st_size))
        assert main(["podcast", site.url("feed.xml"), "--out", str(out), "--no-progress",
                     "--speakers", "3"]) == 0
    words = pd.read_parquet(out / "words")
    [rttm] = out.rglob("*.rttm")
    mapping = speaker_mapping(truth, _rttm_turns(rttm, rttm.stem), 72.0)
    checked = [(mapping.get(w.speaker), expected) for w in words.itertuples()
               if (expected := _clearly_inside(truth, (w.start_s + w.end_s) / 2)) is not None]
    assert len(checked) > 50 and sum(a == b for a, b in checked) >= 0.95 * len(checked)
    speakers = pd.read_parquet(out / "speakers")
    assert sorted(speakers["speaker"]) == ["SPEAKER_1", "SPEAKER_2", "SPEAKER_3"]
    assert pd.read_parquet(out / "segments")["speaker"].nunique() == 3

