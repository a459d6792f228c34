"""A misbehaving OpenAI-compatible model on 127.0.0.1: the embedded model's true transcript,
turned, on a seeded share of first answers, into what audio LLMs are known to send back.

    with misbehaving_model(share=0.4, seed=24) as model:     # model.base_url, model.log
        await run_transcribe(manifest, out, base_url=model.base_url, model=model.name)

It is `tests.helpers.faultserver.FaultServer` (a real HTTP server on a loopback port) in front of
the embedded model's ASGI app: every request is transcribed for real, then the answer is
rewritten. It calls itself `MODEL_NAME` (a remote model to audiobatch, priced at gpt-audio-mini's
list price as a gateway's unknown model is) and asks the embedded model upstream. Which answers misbehave, and how, depends only on the request's audio and the
seed (a hash), so a run is reproducible and the same chunk misbehaves the same way in every
run. A re-ask (a request that carries the strict instruction, `tasks.model.prompts`) is
answered truthfully, as a model that was told firmly would; `always=True` misbehaves on
re-asks too.

The five ways (`KINDS`), each in phrasings the text checks of tasks/transcription/qa.py do
not all know, so that only the audio can tell:
- chatter: the transcript inside words addressed to the user;
- refusal: a polite no;
- loop: the transcript, then its last words again and again;
- truncation: the first half of the transcript, with finish_reason "length" or "stop";
- answer: a reply TO the speaker ("That's an interesting point about ...").
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from audiobatch.tasks.model.profiles import LOCAL_MODEL
from audiobatch.tasks.model.prompts import STRICT_TRANSCRIPT
from tests.helpers.faultserver import Behaviour, FaultServer, Received, forward, rewritten

KINDS = ("chatter", "refusal", "loop", "truncation", "answer")
MODEL_NAME = "gpt-audio-mini"

CHATTER = [
    ("Sure! Here is the transcript of the audio:\n\n{text}", "\n\nLet me know if you need anything else!"),
    ("Okay, I listened to the clip. Word for word, it goes like this:\n{text}",
     "\nHope that helps with your project."),
    ("{text}", "\n\nWould you like me to summarise this as well?"),
]
REFUSALS = [
    "I'm sorry, but I can't help with transcribing this recording.",
    "Unfortunately I am not able to process this audio. Please try a different file.",
    "This request goes against my guidelines, so I will have to decline it.",
]
ANSWERS = [
    "That's an interesting point about {topic}. Could you tell me more about what you mean?",
    "Great question! {Topic} has a long history, and people disagree about it. What made you "
    "think of it?",
    "I understand how you feel about {topic}. Many people share that view, and it is worth "
    "talking through. Where would you like to start?",
]
_STOPWORDS = set("""a an and are as at be been but by for from had has have he her his i in is
it its of on or our she so that the their them there they this to was we were what when which
who will with you your not no do does did all any can could would should may might must than
then these those into out up down over under about just very only also""".split())


@dataclass
class Misbehaviour:
    """What the model did to one first answer (for the test's own bookkeeping)."""

    kind: str
    truth: str


@dataclass
class MisbehavingModel:
    base_url: str
    name: str = MODEL_NAME
    log: list[Misbehaviour] = field(default_factory=list)
    chosen: list[str] = field(default_factory=list)


def _fraction(digest: bytes) -> float:
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def audio_digest(request: Received, seed: int) -> bytes:
    """A hash of the request's audio (and the seed): which chunk this is, whatever else the
    request says."""
    hasher = hashlib.sha256(str(seed).encode())
    for message in (request.json or {}).get("messages", []):
        for part in message.get("content") or []:
            if isinstance(part, dict) and part.get("type") == "input_audio":
                hasher.update(part["input_audio"]["data"].encode())
    return hasher.digest()


def topic_of(text: str) -> str:
    """The longest content word of the transcript: what an answer would talk about."""
    words = [w for w in re.findall(r"[A-Za-z']+", text) if w.lower() not in _STOPWORDS]
    return max(words, key=len).lower() if words else "that"


def misbehave(kind: str, text: str, variant: int) -> tuple[str, str]:
    """(reply text, finish_reason) for one kind of misbehaviour of a true transcript."""
    words = text.split()
    if kind == "chatter":
        before, after = CHATTER[variant % len(CHATTER)]
        return before.format(text=text) + after, "stop"
    if kind == "refusal":
        return REFUSALS[variant % len(REFUSALS)], "stop"
    if kind == "answer":
        topic = topic_of(text)
        return ANSWERS[variant % len(ANSWERS)].format(topic=topic, Topic=topic.capitalize()), "stop"
    if kind == "loop":
        tail = " ".join(words[-3:]) if words else "the"
        return text + (" " + tail) * 12, "stop" if variant % 2 else "length"
    if kind == "truncation":
        return " ".join(words[:len(words) // 2]), "length" if variant % 2 else "stop"
    raise ValueError(kind)


def is_reask(request: Received) -> bool:
    return any(STRICT_TRANSCRIPT in json.dumps(m) for m in (request.json or {}).get("messages", []))


@contextmanager
def misbehaving_model(share: float = 0.4, seed: int = 24, *, always: bool = False,
                      kinds: tuple[str, ...] = KINDS, upstream_url: str | None = None
                      ) -> Iterator[MisbehavingModel]:
    """The embedded model behind a proxy that misbehaves on `share` of first answers; in this
    process, or `upstream_url` (`audiobatch serve` in its own, for benchmarks of CPU time)."""
    from audiobatch.localmodel.app import create_app

    model = MisbehavingModel(base_url="")

    def upstream(body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "model": LOCAL_MODEL}

    def script(request: Received) -> Behaviour:
        digest = audio_digest(request, seed)
        if (is_reask(request) and not always) or _fraction(digest) >= share:
            return forward(rewrite_request=upstream)
        kind = kinds[len(model.chosen) % len(kinds)]  # every kind, once five have misbehaved
        model.chosen.append(kind)

        def rewrite(answer: dict[str, Any]) -> dict[str, Any]:
            choice = answer["choices"][0]
            truth = choice["message"]["content"] or ""
            text, finish = misbehave(kind, truth, digest[9])
            choice["message"]["content"], choice["finish_reason"] = text, finish
            model.log.append(Misbehaviour(kind, truth))
            return answer

        return rewritten(rewrite, rewrite_request=upstream)

    origin = upstream_url.removesuffix("/v1") if upstream_url else None
    with FaultServer(script, upstream=origin or httpx.ASGITransport(app=create_app())) as server:
        model.base_url = server.base_url
        yield model
