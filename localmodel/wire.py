"""OpenAI Chat Completions wire shapes: parse a request, build answers, chunks and errors.

Pure functions on dicts and bytes (no engines, no I/O), so every shape is easy to test.
"""
from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from audiobatch.tasks.audio.codecs import ENCODABLE_FORMATS
from audiobatch.tasks.extract.tool import TOOL_NAME
from audiobatch.tasks.model.profiles import LOCAL_MODEL, LOCAL_MODELS

INPUT_AUDIO_FORMATS = ("wav", "mp3")  # what OpenAI accepts in input_audio
OUTPUT_AUDIO_FORMATS = ENCODABLE_FORMATS  # wav, mp3, flac, opus, pcm16
AUDIO_EXPIRY_S = 3600


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 param: str | None = None, type: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class AudioInput:
    data: bytes
    format: str
    label: str  # where it sits in the request, for error messages


@dataclass(frozen=True)
class ChatRequest:
    model: str
    audio_inputs: list[AudioInput]
    prompt_texts: list[str]  # every text in the request (counted as prompt text tokens)
    user_text: str  # the text parts of the last user message (what narration speaks)
    output_format: str | None  # None: text only
    voice: str | None
    stream: bool
    include_usage: bool
    temperature: float = 0.0  # above 0: another take of the narration (read a little slower)
    tool: str | None = None  # the one tool it answers: the episode-notes tool (tasks/extract)

    @property
    def wants_audio(self) -> bool:
        return self.output_format is not None


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


# --- parsing -----------------------------------------------------------------------------

def parse_chat_request(raw: bytes) -> ChatRequest:
    body = _json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "you must give 'model' (this server serves 'audiobatch-local').",
                       code="missing_required_parameter", param="model")
    if model not in LOCAL_MODELS:
        raise APIError(404, f"The model '{model}' does not exist here: this server serves only "
                       f"{' and '.join(map(repr, LOCAL_MODELS))}. Ask for '{LOCAL_MODEL}', or point the client at a "
                       f"server that has '{model}'.", code="model_not_found", param="model")
    messages = _messages(body.get("messages"))
    output_format, voice = _audio_output(body)
    audio_inputs, prompt_texts, user_text = _contents(messages)
    stream = _flag(body, "stream")
    if stream and output_format not in (None, "pcm16"):
        raise APIError(400, f"audio format '{output_format}' cannot be streamed: streaming audio "
                       "is pcm16 only (as on OpenAI). Ask for pcm16 or set stream to false.",
                       code="unsupported_value", param="audio.format")
    options = body.get("stream_options") or {}
    include_usage = bool(stream and isinstance(options, dict) and options.get("include_usage"))
    temperature = body.get("temperature")
    tool = _tool(body)
    if tool and (stream or output_format or audio_inputs):
        raise APIError(400, f"the '{tool}' tool is answered on its own: text in, no audio, not "
                       "streamed.", code="unsupported_value", param="tools")
    request = ChatRequest(model, audio_inputs, prompt_texts, user_text, output_format, voice,
                          stream, include_usage,
                          float(temperature) if isinstance(temperature, (int, float)) else 0.0,
                          tool)
    _require_work(request)
    return request


def _tool(body: dict[str, Any]) -> str | None:
    """The episode-notes tool when the request offers it; any other tool is refused: this
    model calls no tool but that one, which it answers by the offline method."""
    tools = body.get("tools")
    if tools is None:
        return None
    names = [tool.get("function", {}).get("name") for tool in tools
             if isinstance(tool, dict) and isinstance(tool.get("function"), dict)] \
        if isinstance(tools, list) else []
    if TOOL_NAME not in names:
        raise APIError(400, f"this model calls no tool but '{TOOL_NAME}' (chapters and show notes, "
                       "which it makes by audiobatch's offline method); it is not a chat model.",
                       code="unsupported_tool", param="tools")
    return TOOL_NAME


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON ({exc}). Send a JSON object "
                       "with 'model' and 'messages'.", code="invalid_json") from exc
    except RecursionError:
        raise APIError(400, "the request body nests JSON too deeply. Send a JSON object with "
                       "'model' and 'messages'.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object with 'model' and 'messages'.",
                       code="invalid_json")
    return body


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool) and value is not None:
        raise APIError(400, f"'{name}' must be true or false.", code="invalid_type", param=name)
    return bool(value)


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list of {role, content} objects.",
                       code="missing_required_parameter", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise APIError(400, f"messages[{index}] must be an object with a 'role'.",
                           code="invalid_type", param=f"messages[{index}]")
    return messages


def _audio_output(body: dict[str, Any]) -> tuple[str | None, str | None]:
    modalities = body.get("modalities") or ["text"]
    if not isinstance(modalities, list) or not set(modalities) <= {"text", "audio"}:
        raise APIError(400, "'modalities' must be [\"text\"] or [\"text\", \"audio\"].",
                       code="invalid_value", param="modalities")
    if "audio" not in modalities:
        return None, None
    audio = body.get("audio")
    if not isinstance(audio, dict):
        raise APIError(400, "modalities include 'audio', so give 'audio': {\"voice\": ..., "
                       "\"format\": ...}.", code="missing_required_parameter", param="audio")
    voice, fmt = audio.get("voice"), audio.get("format")
    if not isinstance(voice, str) or not voice:
        raise APIError(400, "give 'audio.voice' (any name; this server has one voice).",
                       code="missing_required_parameter", param="audio.voice")
    if fmt not in OUTPUT_AUDIO_FORMATS:
        raise APIError(400, f"audio.format {fmt!r} is not supported; choose one of "
                       f"{', '.join(OUTPUT_AUDIO_FORMATS)}.", code="invalid_value",
                       param="audio.format")
    return fmt, voice


def _contents(messages: list[dict[str, Any]]) -> tuple[list[AudioInput], list[str], str]:
    """Audio parts and texts of the request; audio and spoken text come from the last user message."""
    prompt_texts: list[str] = []
    last_user: tuple[list[AudioInput], list[str]] = ([], [])
    for index, message in enumerate(messages):
        audio, texts = _parts(message.get("content"), f"messages[{index}].content")
        prompt_texts.extend(texts)
        if message["role"] == "user":
            last_user = (audio, texts)
    audio_inputs, user_texts = last_user
    return audio_inputs, prompt_texts, "\n".join(t.strip() for t in user_texts if t.strip())


def _parts(content: Any, where: str) -> tuple[list[AudioInput], list[str]]:
    if content is None:
        return [], []
    if isinstance(content, str):
        return [], [content]
    if not isinstance(content, list):
        raise APIError(400, f"{where} must be a string or a list of content parts.",
                       code="invalid_type", param=where)
    audio: list[AudioInput] = []
    texts: list[str] = []
    for index, part in enumerate(content):
        label = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "input_audio":
            audio.append(_input_audio(part.get("input_audio"), f"{label}.input_audio"))
        else:
            raise APIError(400, f"{label}: content part type {kind!r} is not supported here; "
                           "use 'text' or 'input_audio'.", code="invalid_value", param=label)
    return audio, texts


def _input_audio(value: Any, label: str) -> AudioInput:
    if not isinstance(value, dict):
        raise APIError(400, f"{label} must be {{\"data\": <base64>, \"format\": \"wav\"|\"mp3\"}}.",
                       code="invalid_type", param=label)
    fmt = value.get("format")
    if fmt not in INPUT_AUDIO_FORMATS:
        raise APIError(400, f"{label}.format {fmt!r} is not supported; send wav or mp3.",
                       code="invalid_value", param=f"{label}.format")
    encoded = value.get("data")
    try:
        data = base64.b64decode(encoded or "", validate=True) if isinstance(encoded, str) else b""
    except (binascii.Error, ValueError) as exc:
        raise APIError(400, f"{label}.data is not valid base64 ({exc}).", code="invalid_audio",
                       param=f"{label}.data") from exc
    if not data:
        raise APIError(400, f"{label}.data is empty: send the audio file's bytes, base64-encoded.",
                       code="invalid_audio", param=f"{label}.data")
    found = sniffed_format(data)
    if found != fmt:
        raise APIError(400, f"{label}.format says {fmt!r}, but the data is "
                       f"{found or 'not recognised as audio'}: send {fmt} bytes, or say which "
                       "format they are in (wav or mp3).", code="invalid_audio", param=label)
    return AudioInput(data, fmt, label)


def sniffed_format(data: bytes) -> str | None:
    """The audio format the bytes themselves show: 'wav', 'mp3', another name, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"  # an ID3 tag, or an MPEG audio frame header
    for magic, name in ((b"fLaC", "FLAC"), (b"OggS", "Ogg"), (b"RIFF", "RIFF (not WAVE)")):
        if data.startswith(magic):
            return name
    return "MP4/M4A" if data[4:8] == b"ftyp" else None


def _require_work(request: ChatRequest) -> None:
    if request.audio_inputs or request.tool:
        return
    if not request.wants_audio:
        raise APIError(400, "the last user message has no input_audio. This model transcribes "
                       "input_audio, or speaks text when asked for modalities [\"text\", "
                       "\"audio\"]; it is not a chat model.", code="missing_input_audio",
                       param="messages")
    if not any(ch.isalnum() for ch in request.user_text):
        raise APIError(400, "nothing to speak: the last user message has no text with words in "
                       "it. Put the text to narrate in the last user message.",
                       code="missing_text", param="messages")


# --- answers -----------------------------------------------------------------------------

def usage_dict(*, prompt_audio: int, prompt_text: int, completion_audio: int,
               completion_text: int) -> dict[str, Any]:
    prompt, completion = prompt_audio + prompt_text, completion_audio + completion_text
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"audio_tokens": prompt_audio, "text_tokens": prompt_text,
                                  "cached_tokens": 0},
        "completion_tokens_details": {"audio_tokens": completion_audio,
                                      "text_tokens": completion_text, "reasoning_tokens": 0},
    }


def audio_dict(audio_id: str, created: int, *, data: str | None = None,
               transcript: str | None = None) -> dict[str, Any]:
    audio: dict[str, Any] = {"id": audio_id, "expires_at": created + AUDIO_EXPIRY_S}
    if data is not None:
        audio["data"] = data
    if transcript is not None:
        audio["transcript"] = transcript
    return audio


def completion_dict(completion_id: str, created: int, *, content: str | None,
                    audio: dict[str, Any] | None, usage: dict[str, Any],
                    model: str = LOCAL_MODEL, tool_call: tuple[str, str] | None = None) -> dict[str, Any]:
    """A chat.completion; `tool_call` = (function name, arguments JSON) answers with that call."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if audio is not None:
        message["audio"] = audio
    if tool_call is not None:
        message["tool_calls"] = [{"id": new_id("call_"), "type": "function",
                                  "function": {"name": tool_call[0], "arguments": tool_call[1]}}]
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if tool_call else "stop"}],
        "usage": usage,
    }


def chunk_dict(completion_id: str, created: int, *, delta: dict[str, Any] | None = None,
               finish_reason: str | None = None, usage: dict[str, Any] | None = None,
               include_usage: bool = False) -> dict[str, Any]:
    """One chat.completion.chunk; `delta=None` makes the final usage-only chunk (choices: [])."""
    chunk: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk",
                             "created": created, "model": LOCAL_MODEL}
    if delta is None:
        chunk["choices"] = []
    else:
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                             "logprobs": None}]
    if include_usage:
        chunk["usage"] = usage  # null on every chunk but the last, as OpenAI does
    return chunk


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def now() -> int:
    return int(time.time())
