"""Transcript QA with re-ask (tasks/transcription/qa.py, agreement.py) through a proxy that makes a
real model misbehave: the embedded model answers every request for real (called by the name
of a remote model, so QA treats it as one), and the proxy
(tests/helpers/faultserver.py) rewrites its answer the way audio LLMs misbehave - chatter,
refusal, answering instead of transcribing, a loop, a cut-off reply - either once per chunk
(the re-ask gets the real answer) or persistently. One flow run holds every scenario as its
own item (the scenario rides in the item's `prompt`, which the embedded model ignores):
each transcript must equal the clean item's, or be flagged."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import pytest_asyncio

from audiobatch.localmodel.app import create_app
from audiobatch.tasks.model.prompts import STRICT_TRANSCRIPT
from audiobatch.tasks.captions.words import Word
from audiobatch.tasks.transcription.qa import Evidence, judge
from tests.helpers.data import SPEECH
from tests.helpers.e2e import RunResult, run_transcribe, write_manifest
from tests.helpers.faultserver import Behaviour, FaultServer, Received, forward, rewritten
from tests.helpers.misbehaving import MODEL_NAME

KINDS = ("chatter", "refusal", "answer", "loop", "truncated")


def _content(answer: dict[str, Any]) -> str:
    return answer["choices"][0]["message"]["content"] or ""


def _with(answer: dict[str, Any], text: str, finish_reason: str = "stop") -> dict[str, Any]:
    answer["choices"][0]["message"]["content"] = text
    answer["choices"][0]["finish_reason"] = finish_reason
    return answer


MISBEHAVIOURS = {
    "chatter": lambda a, n: _with(a, "Sure! Here is the transcript of the audio:\n\n"
                                  f"{_content(a)}\n\nLet me know if you need anything else!"),
    "refusal": lambda a, n: _with(a, ["I'm sorry, but I can't help with transcribing this recording.",
                                      "I'm sorry, I cannot transcribe this."][n]),
    "answer": lambda a, n: _with(a, "It sounds like the speaker is describing the history of "
                                 "printing. " + ["What would you like to know about it?",
                                                 "Shall I tell you more?"][n]),
    "loop": lambda a, n: _with(a, _content(a) + (" " + " ".join(_content(a).split()[-3:])) * (8 + n)),
    "truncated": lambda a, n: _with(a, " ".join(_content(a).split()[:4 + n]), "length"),
}


def scenario_of(request: Received) -> tuple[str, str] | None:
    texts = [part.get("text", "") for message in request.json["messages"]
             for part in message["content"] if isinstance(part, dict)]
    for text in texts:
        if "scenario=" in text:
            kind, _, how = text.split("scenario=")[1].split()[0].partition("-")
            return kind, how
    return None


def upstream(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "model": "audiobatch-local"}  # the remote model is the embedded one


def misbehaving(request: Received) -> Behaviour:
    """Rewrite the real answer as the item's scenario says; a re-ask (the strict instruction)
    of a "once" scenario is answered for real."""
    scenario = scenario_of(request)
    if scenario is None:
        return forward(rewrite_request=upstream)
    kind, how = scenario
    reask = any(STRICT_TRANSCRIPT in json.dumps(m) for m in request.json["messages"])
    if how == "once" and reask:
        return forward(rewrite_request=upstream)
    # persistently, yet in other words when asked again (a model that repeats itself word for
    # word is one a re-ask cannot change: tests/test_qa_audio.py)
    return rewritten(lambda answer: MISBEHAVIOURS[kind](answer, int(reask)),
                     rewrite_request=upstream)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def qa_run(prefect_api: None, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """A 9.7 s LJ Speech clip per item; one clean item and one item per kind of misbehaviour,
    once and persistently. (Word times off: they are tested in test_words.py.)"""
    folder = tmp_path_factory.mktemp("qa")
    audio = str(SPEECH / "coqui-tts__LJ001-0001.wav")
    rows = [{"id": "clean", "audio": audio, "prompt": "Transcribe this."}]
    rows += [{"id": f"{kind}-{how}", "audio": audio, "prompt": f"scenario={kind}-{how} "}
             for kind in KINDS for how in ("once", "always")]
    manifest = write_manifest(folder / "m.csv", rows)
    with FaultServer(misbehaving, upstream=httpx.ASGITransport(app=create_app())) as proxy:
        return await run_transcribe(manifest, folder / "out", base_url=proxy.base_url,
                                    model=MODEL_NAME, concurrency=4, max_attempts=2,
                                    word_times=False)


def transcript(run: RunResult, item: str) -> dict[str, Any]:
    return run.item(item, "transcripts")


def test_the_clean_item_passes_every_check(qa_run: RunResult) -> None:
    clean = transcript(qa_run, "clean")
    assert clean["n_chunks"] == 1 and len(clean["text"].split()) > 20
    assert list(clean["qa_flags"]) == []
    costs = qa_run.dataset("costs")
    assert costs.loc[costs["item_id"] == "clean", "reask_reason"].isna().all()


@pytest.mark.parametrize("kind", KINDS)
def test_a_model_that_misbehaves_once_gives_the_clean_transcript(qa_run: RunResult, kind: str) -> None:
    item = f"{kind}-once"
    assert transcript(qa_run, item)["text"] == transcript(qa_run, "clean")["text"]
    assert list(transcript(qa_run, item)["qa_flags"]) == []
    costs = qa_run.dataset("costs")
    mine = costs[costs["item_id"] == item].sort_values(["chunk_index", "attempt"])
    if kind == "chatter":  # a benign wrapper around a faithful transcript is stripped
        assert mine["reask_reason"].isna().all() and len(mine) == 1
        return
    # asked twice: the re-ask is attempt 2, priced like any, with the reason
    assert list(mine["attempt"]) == [1, 2]
    first, reason = mine["reask_reason"].fillna("")
    assert first == "" and kind in reason.split(",")
    assert mine["cost_usd"].notna().all()


@pytest.mark.parametrize("kind", KINDS)
def test_a_model_that_keeps_misbehaving_is_flagged_never_clean(qa_run: RunResult, kind: str) -> None:
    item = f"{kind}-always"
    row = transcript(qa_run, item)
    if kind == "chatter":  # stripped and shown faithful: the same words as the clean run
        assert row["text"] == transcript(qa_run, "clean")["text"] and list(row["qa_flags"]) == []
        return
    assert f"chunk 0: {kind}" in list(row["qa_flags"])
    assert qa_run.item(item)["status"] == "ok"  # kept, with its flags
    segments = qa_run.dataset("segments")
    flags = segments.loc[segments["item_id"] == item, "qa_flags"]
    assert len(flags) and all(kind in list(f) for f in flags)


def test_checks_accept_real_transcripts_of_every_english_clip() -> None:
    """No false alarms on what Whisper itself writes for the shared clips (the references)."""
    references = pd.read_csv(SPEECH.parent / "references.csv")
    for row in references[references["language"] == "en"].itertuples():
        verdict = judge(row.reference_text, finish_reason="stop", refusal=None,
                        evidence=Evidence([(0.0, row.duration_s * 0.85)]))
        assert verdict.ok, (row.file, verdict.problems)


def test_digits_read_out_agree_however_whisper_writes_them() -> None:
    # the embedded Whisper's hearing of a telephone clip of digits read out, and two
    # transcripts of it (CI flagged a well-behaved model's reply "mismatch" and paid a re-ask)
    heard = "One zero zero zero one nine oh two one zero one eight zero three."
    for reply in ("1, 0, 0, 0, 1. 9, 0, 2, 1, 0. 1, 8, 0, 3.", "1,0001, 90210, 1803"):
        verdict = judge(reply, finish_reason="stop", refusal=None,
                        evidence=Evidence([(0.0, 6.0)], reference=heard))
        assert verdict.ok and verdict.agreement > 0.8, (reply, verdict)
    answer = "Those numbers look like a postal code. Would you like me to look it up?"
    assert "mismatch" in judge(answer, finish_reason="stop", refusal=None,
                               evidence=Evidence([(0.0, 6.0)], reference=heard)).problems


def test_checks_name_each_misbehaviour() -> None:
    real = ("Printing, in the only sense with which we are at present concerned, differs from "
            "most if not from all the arts and crafts represented in the exhibition")
    answer = {"choices": [{"message": {"content": real}, "finish_reason": "stop"}]}
    for kind, misbehave in MISBEHAVIOURS.items():
        bad = misbehave(json.loads(json.dumps(answer)), 0)["choices"][0]
        verdict = judge(bad["message"]["content"], finish_reason=bad["finish_reason"],
                        refusal=None, evidence=Evidence([(0.0, 9.0)], reference=real))
        assert (verdict.problems, verdict.text) == ((), real) if kind == "chatter" else kind in verdict.problems


def _timed(text: str, seconds_each: float, start: float = 0.0, probability: float = 0.9) -> list[Word]:
    return [Word(w, start + i * seconds_each, start + (i + 1) * seconds_each, probability)
            for i, w in enumerate(text.split())]


def test_a_loop_is_a_repeat_the_audio_gives_no_time() -> None:
    said = "yes yes yes yes yes I said"
    spans = [(0.0, 3.0)]
    spoken = judge(said, finish_reason="stop", refusal=None,
                   evidence=Evidence(spans, _timed(said, 0.5)))
    assert spoken.ok
    looped = said + " yes" * 8
    words = _timed(said, 0.5) + [Word("yes", 3.0, 3.0, 0.9)] * 8  # squeezed at the end
    assert "loop" in judge(looped, finish_reason="stop", refusal=None,
                           evidence=Evidence(spans, words)).problems


def test_lines_the_audio_does_not_hold_are_stripped_as_a_wrapper() -> None:
    text = "Okay, I listened to the clip. Word for word:\nprinting in the only sense\nHope that helps."
    words = (_timed("Okay, I listened to the clip. Word for word:", 0.1, probability=0.1)
             + _timed("printing in the only sense", 0.4, 1.0, probability=0.9)
             + _timed("Hope that helps.", 0.1, 3.0, probability=0.05))
    verdict = judge(text, finish_reason="stop", refusal=None, evidence=Evidence([(1.0, 3.0)], words))
    assert verdict.ok and verdict.text == "printing in the only sense"


def test_speech_left_after_the_last_word_is_a_truncation() -> None:
    text = "printing in the only sense"
    verdict = judge(text, finish_reason="stop", refusal=None,
                    evidence=Evidence([(0.0, 8.0)], _timed(text, 0.4)))
    assert "truncated" in verdict.problems
