"""Does a reply agree with its audio? QA of one chunk: the reply judged by its text and by what
the audio holds, re-asked once when a re-ask can change it, the better-agreeing text kept.

The evidence is gathered as cheaply as it can be (tasks/transcription/qa.py judges it):
- the chunk's speech, by Silero VAD (~0.003 of real time);
- the reply force-aligned to the chunk by the embedded Whisper (`ctx.aligner`): one encoder
  pass per 30 s and a decoder pass over the reply's own tokens, which scores every word. Word
  times need that very alignment, so the accepted reply's words are handed on to them
  (`ChunkText.words`) instead of being aligned a second time;
- the embedded Whisper's hearing of the chunk (`ctx.ears`, remote models only: a full decode,
  the dear part), asked only when the alignment leaves the reply in doubt.

A re-ask is sent only when it can change the answer (`reask_can_change`): the embedded model
follows no instructions and decodes deterministically (its re-ask differs only by dropping the
context and Whisper's conditioning on its own earlier windows), and a remote model whose
re-asks came back with the very text it gave first (twice, and never otherwise) is not
re-asked again in this run.

Words placed over a span the voice detector calls non-speech (music, noise, silence) are
flagged "non-speech"; the embedded model drops such text itself (localmodel/engines.py), and
text that the alignment can give no time (squeezed at a cut-out stretch of non-speech) is a
"mismatch".
Inputs are model replies: hostile (DESIGN.md "Trust model"); they are only compared and cut.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import numpy as np
import soundfile as sf

from audiobatch.tasks.audio.prepare import Chunk
from audiobatch.tasks.audio.pauses import quiet_stretches, sounding
from audiobatch.tasks.audio.vad import VAD_RATE, no_speech_stretches, speech_spans
from audiobatch.tasks.captions.words import MIN_QUIET_EDGE_S, Word, word_pieces
from audiobatch.tasks.errors import AudiobatchError
from audiobatch.tasks.model.profiles import LOCAL_MODELS
from audiobatch.tasks.run.cache import ReplyRecord
from audiobatch.tasks.run.context import RunContext
from audiobatch.tasks.transcription.bounds import overlong
from audiobatch.tasks.transcription.qa import Evidence, Verdict, judge, non_speech_words

WHISPER_WINDOW_S = 30.0  # the embedded model conditions on its own text only across windows
ECHOES_BEFORE_STOP = 2  # re-asks answered with the first text, none changed: stop re-asking


@dataclass
class ChunkText:
    """A chunk's accepted transcript, what QA could not fix in it, what the model said about
    the language, and the transcript's words aligned to the chunk (None: not aligned yet)."""

    text: str
    flags: tuple[str, ...] = ()
    language: str | None = None
    language_probability: float | None = None
    words: list[Word] | None = None


@dataclass
class ChunkAudio:
    """A chunk's samples and speech, read once for all its replies; what the embedded
    Whisper heard there, once asked."""

    samples: np.ndarray
    spans: list[tuple[float, float]]
    no_speech: list[tuple[float, float]]
    sound: list[tuple[float, float]]
    recorded_s: float  # of the recording the chunk stands for (economy may have cut pauses)
    heard: str | None = None

    def evidence(self, words: list[Word] | None, heard: str | None = None) -> Evidence:
        return Evidence(self.spans, words, heard, self.no_speech, self.sound)


@dataclass(frozen=True)
class Assessed:
    reply: ReplyRecord
    verdict: Verdict
    words: list[Word] | None  # the verdict's text, aligned


async def chunk_audio(chunk: Chunk) -> ChunkAudio:
    samples, _ = await asyncio.to_thread(sf.read, chunk.path, dtype="float32")
    spans = await asyncio.to_thread(speech_spans, samples)
    quiet = quiet_stretches(samples, VAD_RATE, MIN_QUIET_EDGE_S)
    return ChunkAudio(samples, spans, await asyncio.to_thread(no_speech_stretches, samples),
                      sounding(quiet, len(samples) / VAD_RATE), chunk.recorded_s)


async def aligned(ctx: RunContext, audio: ChunkAudio, text: str,
                  language: str | None) -> list[Word] | None:
    """The text's words placed in the chunk (None: no aligner, no words, or it cannot)."""
    pieces = word_pieces(text)
    if ctx.aligner is None or not pieces or not audio.samples.size:
        return None
    try:
        words = await ctx.aligner.align(audio.samples, pieces, language)
    except AudiobatchError:
        return None  # e.g. a language the installed engines cannot align: text checks only
    return [replace(w, word=w.word.strip()) for w in words]


async def assess(ctx: RunContext, audio: ChunkAudio, reply: ReplyRecord,
                 language: str | None) -> Assessed:
    """The reply judged by its text and its alignment; heard by the embedded Whisper only
    when that leaves it in doubt (or when there is no alignment to judge by). A reply with
    more words than the audio can hold is refused unread (hostile: 50,000 words for 2 s would
    otherwise be aligned for minutes)."""
    if overlong(reply.text, audio.recorded_s):
        return Assessed(reply, Verdict(("overlong",), ""), None)
    words = await aligned(ctx, audio, reply.text, language)
    verdict = _judge(reply, audio.evidence(words))
    if ctx.ears is not None and (verdict.doubt or words is None):
        if audio.heard is None:
            audio.heard = await ctx.ears.hear(audio.samples, language)
        verdict = _judge(reply, audio.evidence(words, audio.heard))
    if verdict.text != reply.text:  # a wrapper was stripped: place what is kept
        words = await aligned(ctx, audio, verdict.text, language)
    return Assessed(reply, verdict, words)


def _judge(reply: ReplyRecord, evidence: Evidence) -> Verdict:
    return judge(reply.text, finish_reason=reply.finish_reason, refusal=reply.refusal,
                 evidence=evidence)


def reask_can_change(ctx: RunContext, model: str, chunk: Chunk, context: str | None) -> bool:
    """Whether a re-ask (stricter instruction, another temperature) can give another answer:
    not from a model that answered ECHOES_BEFORE_STOP re-asks in this run with its first text
    and never otherwise (deaf to instruction and temperature: asking again only costs)."""
    echoed, changed = ctx.reask_echoes.get(model, (0, 0))
    if echoed >= ECHOES_BEFORE_STOP and not changed:
        return False
    if model in LOCAL_MODELS:  # deterministic, deaf to instructions: only a fresh decode differs
        return context is not None or chunk.duration_s > WHISPER_WINDOW_S
    return True


def better(first: Assessed, second: Assessed) -> Assessed:
    """The better-agreeing of two answers: fewer problems, then the higher agreement."""
    def rank(a: Assessed) -> tuple[int, float]:
        return len(a.verdict.problems), -(a.verdict.agreement or 0.0)
    return second if rank(second) <= rank(first) else first


async def checked_chunk_text(ctx: RunContext, chunk: Chunk, reply: ReplyRecord, model: str,
                             language: str | None, context: str | None,
                             ask_again: Callable[[str], Awaitable[ReplyRecord]]) -> ChunkText:
    """QA of one chunk's reply: judged, re-asked once (`ask_again(reason)`) when it fails and
    a re-ask can change it; what still fails is kept, the better-agreeing answer, with flags."""
    audio = await chunk_audio(chunk)
    best = await assess(ctx, audio, reply, language)
    if not best.verdict.ok and reask_can_change(ctx, model, chunk, context):
        retry = await ask_again(",".join(best.verdict.problems))
        ctx.reask_echoes.setdefault(model, [0, 0])[0 if retry.text == reply.text else 1] += 1
        if _same_answer(retry, reply):  # judged already: the same words get the same verdict
            best = replace(best, reply=retry)
        else:
            best = better(best, await assess(ctx, audio, retry, language))
    return _flagged(best, audio)


def _same_answer(a: ReplyRecord, b: ReplyRecord) -> bool:
    return (a.text, a.finish_reason, a.refusal) == (b.text, b.finish_reason, b.refusal)


def _flagged(best: Assessed, audio: ChunkAudio) -> ChunkText:
    """The chunk's text with what QA could not fix, and words placed over non-speech."""
    reply, verdict, words = best.reply, best.verdict, best.words
    flags = verdict.problems
    if words and non_speech_words(words, audio.no_speech) and "non-speech" not in flags:
        flags += ("non-speech",)
    return ChunkText(verdict.text, flags, reply.language, reply.language_probability, words)
