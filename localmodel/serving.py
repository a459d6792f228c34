"""The settings of a served embedded model that a client cannot change: how much one request
may ask (`ServeLimits`) and which host names requests may be addressed to. Light on purpose:
the command line builds `audiobatch serve --help` from it without loading the server.
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, replace

from audiobatch.tasks.model.profiles import LOCAL_MODEL, get_profile

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
CHARS_PER_WORD = 10  # generous: an average English word with its space is about 6
# A notes request (--chapters) carries a whole transcript, and answering it costs the offline
# method's ~1 s of CPU per hour of speech, not speech synthesis: it may hold this many times more.
NOTES_TEXT_FACTOR = 64


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask of a served model (localmodel/protect.py enforces it)."""

    max_audio_s: float
    max_text_chars: int
    max_queue: int  # requests waiting behind the one being worked on
    # From a request's arrival to the end of its body: a client that sends a head and no body
    # would otherwise hold its place in the queue for as long as it likes.
    body_timeout_s: float = 30.0

    def for_notes(self) -> ServeLimits:
        """The limits of a notes-tool request: the same, with room for a transcript of hours."""
        return replace(self, max_text_chars=self.max_text_chars * NOTES_TEXT_FACTOR)

    @classmethod
    def defaults(cls) -> ServeLimits:
        """The embedded model's per-request budgets: audio in (409.6 s) and, for text, the words
        that fit its audio-out budget (about 650 words, 6,554 characters)."""
        profile = get_profile(LOCAL_MODEL)
        audio_in_s = profile.max_input_audio_tokens / profile.input_audio_tokens_per_s
        speech_out_s = profile.max_output_audio_tokens / profile.output_audio_tokens_per_s
        words = speech_out_s * profile.words_per_minute / 60
        return cls(max_audio_s=audio_in_s, max_text_chars=math.ceil(words * CHARS_PER_WORD),
                   max_queue=4)


def allowed_hosts(bind: str, *, api_key: bool) -> frozenset[str] | None:
    """Host names a request may be addressed to; None: any (a key is required, or the
    operator serves every interface without one on purpose)."""
    if api_key or bind.strip("[]") in WILDCARD_HOSTS:
        return None
    return LOOPBACK_NAMES | {bind.strip("[]").lower()}


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
