"""Item tasks on Dask (prefect-dask): `--task-runner dask` gives the same outputs as the
default runner, with the embedded model's engines loaded in the Dask worker processes; a
scheduler address from a run started through the Prefect API must be one the worker allows.
Real engines, real speech, a real LocalCluster of two worker processes.
"""
from __future__ import annotations

import pandas as pd
import pytest

from audiobatch.flows.task_runners import dask_address
from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.run.context import RunOptions
from tests.helpers.data import SPEECH
from tests.helpers.e2e import run_transcribe, write_manifest

CLIPS = ["pocketsphinx__goforward.wav", "deepspeech__LDC93S1.wav", "speech_recognition__english.wav"]


def _rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    return sorted(frame[columns].itertuples(index=False, name=None))


@pytest.mark.slow  # a Dask cluster of two processes, each loading the engines
async def test_dask_gives_the_same_outputs_as_the_default_runner(prefect_api, tmp_path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", [{"id": c[:16], "audio": str(SPEECH / c)}
                                                   for c in CLIPS])
    default = await run_transcribe(manifest, tmp_path / "default", use_cache=False)
    dask = await run_transcribe(manifest, tmp_path / "dask", use_cache=False, task_runner="dask",
                                dask_workers=2)
    assert default.summary["ok"] == dask.summary["ok"] == len(CLIPS)
    for dataset, columns in (("transcripts", ["item_id", "text", "duration_s", "n_chunks"]),
                             ("segments", ["item_id", "segment_index", "start_s", "end_s", "text"]),
                             ("items", ["item_id", "status", "requests"])):
        assert _rows(dask.dataset(dataset), columns) == _rows(default.dataset(dataset), columns)
    costs = dask.dataset("costs")
    assert len(costs) == len(CLIPS) and (costs["http_status"] == 200).all()
    # the requests were made by the Dask workers, each writing its own staging file
    staged = list((tmp_path / "dask" / "_runs" / dask.summary["run_id"]).glob("costs.*.jsonl"))
    assert len(staged) >= 1


def test_a_submitted_run_may_use_only_the_schedulers_its_worker_allows(monkeypatch) -> None:
    options = RunOptions(kind="transcribe", manifest="m.csv", task_runner="dask://10.0.0.7:8786")
    assert dask_address(options, started_by_deployment=False) == "tcp://10.0.0.7:8786"
    with pytest.raises(ConfigError, match="AUDIOBATCH_DASK_SCHEDULERS"):
        dask_address(options, started_by_deployment=True)
    monkeypatch.setenv("AUDIOBATCH_DASK_SCHEDULERS", "dask://10.0.0.7:8786")
    assert dask_address(options, started_by_deployment=True) == "tcp://10.0.0.7:8786"
    assert dask_address(RunOptions(kind="transcribe", manifest="m.csv", task_runner="dask"), True) is None
