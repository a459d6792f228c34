"""Model profiles and prices, read from `profiles.toml` (data, not code).

A profile says how a model counts audio tokens and how much audio one request may carry;
prices belong to a (provider, model) pair so that a gateway can charge differently from
OpenAI. Users merge their own TOML over the shipped one (`--profiles` or AUDIOBATCH_PROFILES).
"""
from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.options import deep_merge

LOCAL_MODEL = "audiobatch-local"
LOCAL_MULTILINGUAL_MODEL = "audiobatch-local-multilingual"  # extra [multilingual]
LOCAL_MODELS = (LOCAL_MODEL, LOCAL_MULTILINGUAL_MODEL)
LOCAL_PROVIDER = "local"
DEFAULT_REMOTE_MODEL = "gpt-audio-1.5"
SHIPPED_PROFILES = Path(__file__).with_name("profiles.toml")


@dataclass(frozen=True)
class ModelProfile:
    model: str
    input_audio_tokens_per_s: float
    output_audio_tokens_per_s: float
    max_input_audio_tokens: int
    max_output_audio_tokens: int
    max_output_text_tokens: int
    context_tokens: int
    max_output_tokens: int
    audio_out: bool
    words_per_minute: float  # of the narrating voice
    speech_words_per_minute: float  # of recordings to transcribe
    languages: tuple[str, ...] = ()  # empty: any language
    notes: str = ""
    retired_on_openai: bool = False
    known: bool = True  # False when the model id is not in any profile file (defaults used)

    def input_audio_tokens(self, seconds: float) -> int:
        return math.ceil(seconds * self.input_audio_tokens_per_s)

    def output_audio_tokens(self, seconds: float) -> int:
        return math.ceil(seconds * self.output_audio_tokens_per_s)

    def with_budget(self, max_input_audio_tokens: int | None = None,
                    max_output_audio_tokens: int | None = None) -> ModelProfile:
        """The same profile with a user-chosen per-request budget (CLI --max-audio-tokens)."""
        changes = {}
        if max_input_audio_tokens:
            changes["max_input_audio_tokens"] = int(max_input_audio_tokens)
        if max_output_audio_tokens:
            changes["max_output_audio_tokens"] = int(max_output_audio_tokens)
        return _replace(self, **changes)


@dataclass(frozen=True)
class Prices:
    """USD per 1M tokens."""

    text_in: float
    text_out: float
    audio_in: float
    audio_out: float
    cached_in: float


def _replace(profile: ModelProfile, **changes: object) -> ModelProfile:
    values = {f.name: getattr(profile, f.name) for f in fields(profile)}
    values.update(changes)
    return ModelProfile(**values)  # type: ignore[arg-type]


@lru_cache(maxsize=8)
def _load(user_file: str | None) -> dict:
    data = tomllib.loads(SHIPPED_PROFILES.read_text())
    if user_file:
        path = Path(user_file)
        try:
            data = deep_merge(data, tomllib.loads(path.read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read the profile file {path}: {exc}. Fix or remove it "
                              "(--profiles / AUDIOBATCH_PROFILES).") from exc
    return data


def _user_file(user_file: str | Path | None) -> str | None:
    chosen = user_file or os.environ.get("AUDIOBATCH_PROFILES") or None
    return str(chosen) if chosen else None


def get_profile(model: str, user_file: str | Path | None = None) -> ModelProfile:
    """The profile of `model`; unknown models get the defaults (and `known=False`)."""
    data = _load(_user_file(user_file))
    entry = data.get("models", {}).get(model)
    values = {**data["defaults"], **(entry or {})}
    names = {f.name for f in fields(ModelProfile)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"profile for {model!r} has unknown keys {sorted(unknown)}; "
                          f"allowed: {sorted(names - {'model', 'known'})}")
    values["languages"] = tuple(values.get("languages", ()))
    return ModelProfile(model=model, known=entry is not None, **values)


def get_prices(provider: str, model: str, user_file: str | Path | None = None) -> Prices | None:
    """Prices for (provider, model), or None when nobody has said what it costs."""
    table = _load(_user_file(user_file)).get("prices", {})
    entry = table.get(provider, {}).get(model)
    if entry is None:
        return None
    return Prices(
        text_in=float(entry.get("text_in", 0.0)),
        text_out=float(entry.get("text_out", 0.0)),
        audio_in=float(entry.get("audio_in", 0.0)),
        audio_out=float(entry.get("audio_out", 0.0)),
        cached_in=float(entry.get("cached_in", entry.get("text_in", 0.0))),
    )


def known_models(user_file: str | Path | None = None) -> list[str]:
    return sorted(_load(_user_file(user_file)).get("models", {}))


def provider_for(base_url: str | None) -> str:
    """'local' for the embedded model, 'openai' for api.openai.com, else the host name."""
    if not base_url:
        return LOCAL_PROVIDER
    host = (urlparse(base_url).hostname or "").lower()
    if host == "api.openai.com":
        return "openai"
    if host.endswith(".openai.azure.com"):
        return "azure"
    return host or "custom"


def estimate_text_tokens(text: str) -> int:
    """Rough BPE token count (about 4 characters a token for English); no tokenizer download."""
    return max(1, math.ceil(len(text) / 4)) if text else 0
