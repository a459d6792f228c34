"""A model's reply is hostile input even when it is well-formed (issue 23, class 2): its words are
bounded by what its audio can hold before anything works on them (QA, alignment, captions), and
a run stopped while it aligns a long reply stops promptly.

Real runs against a scripted endpoint on 127.0.0.1 (tests/helpers/faultserver.py), the embedded
Whisper aligning and listening, real speech.
"""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prefect.settings import PREFECT_API_URL

from audiobatch.tasks.transcription.bounds import MAX_UNITS_EXTRA, MAX_WORDS_PER_S, overlong, units
from tests.helpers.data import ROOT, SPEECH
from tests.helpers.e2e import run_transcribe, write_manifest
from tests.helpers.faultserver import FaultServer, ok

CLIP = SPEECH / "coqui-tts__LJ001-0002.wav"  # 1.9 s: "In being comparatively modern."
LONG = SPEECH / "derived__LJ001-0009_to_0032_concat.wav"  # 171 s


def test_the_bound_is_words_per_second_of_audio() -> None:
    assert not overlong("In being comparatively modern.", 1.9)
    assert not overlong(" ".join(["word"] * 38), 1.9)  # 10 a second and 20 more, at most
    assert overlong(" ".join(["word"] * 40), 1.9)
    assert overlong("hello " * 50_000, 1.9)
    # digits count as said: 3,000 of them are 3,000 words, not one
    assert overlong("1" * 3000, 1.9) and units("10001 90210") == 10
    assert not overlong("这是一个测试" * 6, 1.9)  # 36 characters: scripts without spaces count those
    assert overlong("这是一个测试" * 10, 1.9)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=400), seconds=st.floats(0.0, 30.0))
def test_fuzz_overlong_is_exactly_the_bound_on_words(text: str, seconds: float) -> None:
    from audiobatch.tasks.transcription.bounds import MAX_CHARS_PER_S, NO_SPACE_SCRIPT
    per_s = MAX_CHARS_PER_S if NO_SPACE_SCRIPT.search(text) else MAX_WORDS_PER_S
    assert overlong(text, seconds) == (units(text) > per_s * seconds + MAX_UNITS_EXTRA)


@pytest.mark.usefixtures("prefect_api")
async def test_a_reply_longer_than_its_audio_can_hold_is_never_kept_or_aligned(tmp_path: Path) -> None:
    """4,000 words for a 1.9 s clip was kept as `ok` (flag `loop`) and force-aligned for a
    minute on main; 50,000 ran for minutes. Now: re-asked once (QA on), then left out, flagged."""
    manifest = write_manifest(tmp_path / "m.csv", [{"audio": str(CLIP), "id": "clip"}])
    with FaultServer(default=ok(" ".join(["hello"] * 4000))) as server:
        checked = await run_transcribe(manifest, tmp_path / "out", base_url=server.base_url,
                                       model="gpt-audio-1.5", use_cache=False)
        asked = len(server.requests)
    with FaultServer(default=ok("hello " * 50_000)) as server:
        unchecked = await run_transcribe(manifest, tmp_path / "out2", base_url=server.base_url,
                                         model="gpt-audio-1.5", use_cache=False, qa=False)
    assert asked == 2  # the first reply and one re-ask
    for run in (checked, unchecked):
        transcript = run.item("clip", "transcripts")
        assert run.item("clip")["status"] == "ok"
        assert transcript["text"] == "" and list(transcript["qa_flags"]) == ["chunk 0: overlong"]
        assert not (run.out / "words").exists()  # nothing was aligned


def _cli(manifest: Path, out: Path, base_url: str) -> list[str]:
    return [sys.executable, "-m", "audiobatch.flows.cli", "transcribe", str(manifest), "--out", str(out),
            "--base-url", base_url, "--model", "gpt-audio-1.5", "--no-cache", "--no-progress"]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_sigterm_stops_a_run_while_it_aligns(tmp_path: Path) -> None:
    """1,700 words for 171 s (within the bound; a loop, so kept flagged) take minutes to align
    here. SIGTERM during the alignment: main exited 122 s later; now the walk stops at its
    next 30 s window."""
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as handle:
        csv.writer(handle).writerows([["audio"], [str(LONG)]])
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "AUDIOBATCH_FLEET_LIMITS": "0",
           "OPENAI_API_KEY": "sk-test", "PYTHONPATH": str(ROOT)}
    with FaultServer(default=ok(" ".join(["hello"] * 1700))) as server:
        run = subprocess.Popen(_cli(manifest, tmp_path / "out", server.base_url), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not server.requests and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(server.requests) == 1  # asked: then it aligns the reply (and hears) for minutes
        time.sleep(3)
        assert run.poll() is None  # aligning (on main it went on for two more minutes)
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(timeout=45)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
            raise AssertionError("the run was still aligning 45 s after SIGTERM") from None
    assert run.returncode != 0
