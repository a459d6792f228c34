"""The one exception hierarchy of audiobatch (see the error table in DESIGN.md).

Every error a user can meet derives from `AudiobatchError`. The class says what the pipeline
does with it:

- `InputError`: this item's input is bad; the item fails with the message, the run goes on.
- `TransientModelError`: the endpoint had a passing problem; the client retries it.
- `PermanentModelError`: the endpoint refused this request; no retry, the item fails.
- `RunFatalError`: nothing else can succeed (bad key, no quota, budget spent); stop submitting,
  keep finished work, mark the rest skipped.

Messages name the item, the file and what to do. They never contain an API key: build them
with `redact()` whenever a message may echo configuration or a server's words.
"""
from __future__ import annotations

import os
import re


class AudiobatchError(Exception):
    """Base of every audiobatch error. `kind` is what lands in the `error_type` column."""

    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(AudiobatchError):
    """A setting is wrong (bad model id, bad base URL, unreadable profile file)."""

    kind = "config_error"


class InputError(AudiobatchError):
    """An item's input is unusable: bad manifest row, unreadable audio, empty text, bad voice."""

    kind = "input_error"


class ItemDeadlineExceeded(AudiobatchError):
    """An item took longer than --item-deadline-s (a stuck or very slow endpoint)."""

    kind = "deadline_exceeded"


class ModelError(AudiobatchError):
    """The model endpoint answered with an error, or could not be reached."""

    kind = "model_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retry_after_s = retry_after_s


class TransientModelError(ModelError):
    """Timeouts, dropped connections, 408, 409, 429 rate limits, 5xx, malformed 200s."""

    kind = "transient_error"


class PermanentModelError(ModelError):
    """400, 404, 413, 422 and other 4xx: the same request would fail again."""

    kind = "permanent_error"


class UnreadableUsage(PermanentModelError):
    """A 200 whose `usage` is not numbers: the item fails, the attempt's cost is unknown."""

    kind = "unreadable_usage"


class RunFatalError(ModelError):
    """401, 403, 429 insufficient_quota: no further request can succeed."""

    kind = "run_fatal"


class BudgetExceeded(RunFatalError):
    """The next request would cross the user's --max-cost-usd."""

    kind = "budget_exceeded"


# --- secrets -----------------------------------------------------------------------------

_KEY_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-]{8,}"),  # OpenAI-style keys
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-\.=]{8,}"),
    re.compile(r"(?i)(api[_-]?key[\"'=:\s]+)[A-Za-z0-9_\-\.]{8,}"),
]
_registered_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that `redact` removes it wherever it shows up."""
    if value and len(value) >= 4:
        _registered_secrets.add(value)


def redact(text: str) -> str:
    """Remove API keys (registered ones, the env's, and key-shaped strings) from text."""
    for secret in _registered_secrets | _env_secrets():
        text = text.replace(secret, "***")
    for pattern in _KEY_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text


def _env_secrets() -> set[str]:
    names = ("OPENAI_API_KEY", "AUDIOBATCH_API_KEY", "AUDIOBATCH_SERVE_API_KEY")
    return {v for n in names if (v := os.environ.get(n)) and len(v) >= 4}
