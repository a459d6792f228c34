"""Verified narration: every chunk is heard back by the embedded model; a chunk the voice got
wrong is narrated again (a priced take), and one that stays wrong is kept and flagged.

The voice that gets it wrong is a stand-in: the real embedded model behind a wrapper that
drops one sentence from the text before Piper speaks it (on the first take only, or on every
take), served over real HTTP on 127.0.0.1 as a remote model would be. Whisper, the listener,
is the real embedded one, in-process."""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from audiobatch.localmodel.app import create_app
from audiobatch.tasks.narration.verify import check
from tests.helpers.e2e import run_narrate, write_manifest
from tests.helpers.faultserver import FaultServer

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_api")]

DROPPED = "A grey heron stood perfectly still near the muddy bank."
TEXTS = {
    "clean": "The bakery opens at seven. Fresh bread is ready before eight.",
    "retake": f"The river was calm this morning. {DROPPED} Children watched it from the old bridge.",
    "always": f"The lake was frozen all week. {DROPPED} Nobody dared to walk on the ice.",
}


def dropping_voice() -> Any:
    """The embedded model, except that it leaves DROPPED out: of "retake" texts on the first
    take (no temperature), of "always" texts on every take."""
    app = create_app()

    async def voice(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            return await app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        request = json.loads(body)
        text = request["messages"][-1]["content"]
        if "frozen" in text or ("river" in text and not request.get("temperature")):
            request["messages"][-1]["content"] = text.replace(DROPPED + " ", "")
        body = json.dumps(request).encode()
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))

        sent = False

        async def replay() -> dict:  # the edited body once, then the client's own messages
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app({**scope, "headers": headers}, replay, send)

    return voice


async def test_a_misheard_chunk_is_narrated_again_and_one_that_stays_wrong_is_flagged(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", [{"id": k, "text": v} for k, v in TEXTS.items()])
    with FaultServer(upstream=httpx.ASGITransport(app=dropping_voice())) as server:
        run = await run_narrate(manifest, tmp_path / "out", audio_format="wav", concurrency=2,
                                base_url=server.base_url, model="audiobatch-local", verify_attempts=3)
    assert run.statuses() == {"clean": "ok", "retake": "ok", "always": "ok"}  # kept, not failed
    checks = run.dataset("narration_checks")
    takes = {item: group.sort_values("attempt") for item, group in checks.groupby("item_id")}
    assert takes["clean"]["passed"].tolist() == [True]
    assert takes["retake"]["passed"].tolist() == [False, True]
    assert takes["always"]["passed"].tolist() == [False, False, False]
    assert "heron" not in takes["retake"]["heard"].iloc[0] and "heron" in takes["retake"]["heard"].iloc[1]
    assert takes["retake"]["wer"].iloc[0] > 0.25  # 10 of 27 words missing
    # every take is a priced request of its own, numbered after the chunk's earlier attempts
    costs = run.dataset("costs")
    assert costs.groupby("item_id")["attempt"].apply(sorted).to_dict() == \
        {"clean": [1], "retake": [1, 2], "always": [1, 2, 3]}
    narrations = run.dataset("narrations").set_index("item_id")
    assert list(narrations.loc["clean", "qa_flags"]) == list(narrations.loc["retake", "qa_flags"]) == []
    [flag] = narrations.loc["always", "qa_flags"]
    assert flag.startswith("chunk 0: still misheard after 3 takes")
    # the good take is the one kept: the retake's narration says the sentence, so it is longer
    assert narrations.loc["retake", "duration_s"] > narrations.loc["always", "duration_s"] + 2.0


def test_the_check_counts_normalised_word_errors_with_a_floor_for_short_chunks() -> None:
    same = check("It costs $5, for example, in 1999.", "It costs five dollars for example in 1999", "en")
    assert same.errors == 0 and same.passed
    short = check("Hello there, friend.", "hello friend", "en")
    assert short.errors == 1 and short.wer == pytest.approx(1 / 3) and short.passed  # 1 error <= 2
    long = check(" ".join(["word"] * 40), " ".join(["word"] * 30), "en")
    assert long.wer == 0.25 and not long.passed
    # a skipped sentence fails even where the WER alone would pass: a hole, not scattered errors
    words = ["".join(letters) for letters in itertools.product("bdfgkl", "aeiou", "mnprst")][:200]
    text = " ".join(words)
    hole = check(text, " ".join(words[:50] + words[56:]), "en")
    assert hole.errors == 6 and hole.wer < 0.05 and hole.gap == 6 and not hole.passed
    scattered = check(text, " ".join(w for i, w in enumerate(words) if i not in (7, 50, 51, 90, 140, 141)), "en")
    assert scattered.errors == 6 and scattered.gap == 2 and scattered.passed
