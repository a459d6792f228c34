"""Output roots shared by several submitters: runs never overwrite each other's media, and the
Parquet rows point at each run's own files."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from audiobatch.tasks import codecs
from tests.helpers.e2e import run_narrate, write_manifest

pytestmark = pytest.mark.usefixtures("prefect_api")


async def test_two_runs_with_the_same_item_id_keep_both_files(tmp_path) -> None:
    out = tmp_path / "shared-out"
    first = await run_narrate(write_manifest(tmp_path / "a" / "m.csv", [
        {"id": "intro", "text": "Welcome to the first show."}]), out, audio_format="wav")
    second = await run_narrate(write_manifest(tmp_path / "b" / "m.csv", [
        {"id": "intro", "text": "This is a different introduction, spoken at greater length."}]),
        out, audio_format="wav")
    assert first.statuses() == second.statuses() == {"intro": "ok"}
    paths = [Path(run.item("intro", "narrations")["audio_path"]) for run in (first, second)]
    assert paths[0] != paths[1]
    assert paths == [out / "media" / "narrations" / run.summary["run_id"] / "intro.wav"
                     for run in (first, second)]
    durations = [codecs.decode(path.read_bytes(), 16000).size for path in paths]
    assert durations[1] > durations[0] * 1.5  # each file is its own run's narration
    # README: the latest file for an id, from the datasets
    items = pd.read_parquet(out / "items")
    latest = items[items["status"] == "ok"].sort_values("finished_at").drop_duplicates("item_id", keep="last")
    narrations = pd.read_parquet(out / "narrations").merge(latest[["run_id", "item_id"]])
    assert narrations["audio_path"].tolist() == [str(paths[1])]
