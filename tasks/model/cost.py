"""Tokens and dollars: usage parsed from answers, priced per (provider, model).

`Usage` is the five counters of the wire contract's `usage` object. Cost is computed from
usage and the profile's prices, so the embedded model (priced at zero) can be costed "as if"
it were a remote model (`--price-as`), with the same shape of report.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from audiobatch.tasks.model.profiles import Prices


@dataclass(frozen=True)
class Usage:
    prompt_text_tokens: int = 0
    prompt_audio_tokens: int = 0
    completion_text_tokens: int = 0
    completion_audio_tokens: int = 0
    cached_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: dict[str, Any] | None) -> Usage:
        """Read an OpenAI `usage` object; missing details count as text tokens."""
        if not usage:
            return cls()
        prompt = usage.get("prompt_tokens_details") or {}
        completion = usage.get("completion_tokens_details") or {}
        prompt_audio = int(prompt.get("audio_tokens") or 0)
        completion_audio = int(completion.get("audio_tokens") or 0)
        prompt_text = prompt.get("text_tokens")
        completion_text = completion.get("text_tokens")
        if prompt_text is None:
            prompt_text = max(0, int(usage.get("prompt_tokens") or 0) - prompt_audio)
        if completion_text is None:
            completion_text = max(0, int(usage.get("completion_tokens") or 0) - completion_audio)
        return cls(
            prompt_text_tokens=int(prompt_text),
            prompt_audio_tokens=prompt_audio,
            completion_text_tokens=int(completion_text),
            completion_audio_tokens=completion_audio,
            cached_tokens=int(prompt.get("cached_tokens") or 0),
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    @property
    def total_tokens(self) -> int:
        return (self.prompt_text_tokens + self.prompt_audio_tokens
                + self.completion_text_tokens + self.completion_audio_tokens)


def cost_usd(usage: Usage, prices: Prices | None) -> float | None:
    """Dollars for one request's usage; None when no price is known for the model."""
    if prices is None:
        return None
    # Cached tokens are part of the prompt's text tokens, billed at the cached rate.
    cached = min(usage.cached_tokens, usage.prompt_text_tokens)
    per_million = (
        (usage.prompt_text_tokens - cached) * prices.text_in
        + cached * prices.cached_in
        + usage.prompt_audio_tokens * prices.audio_in
        + usage.completion_text_tokens * prices.text_out
        + usage.completion_audio_tokens * prices.audio_out
    )
    return per_million / 1_000_000
