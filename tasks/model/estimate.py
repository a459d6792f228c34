"""Expected tokens and dollars before anything is sent.

The same functions serve the budget check before each request (`--max-cost-usd`) and the
`audiobatch estimate` report, so what is estimated is what is enforced. Audio tokens follow
from durations and the profile's rates; text tokens from the request text and, for answers,
from the profile's speaking rate (words per minute).
"""
from __future__ import annotations

import math

from audiobatch.tasks.model.cost import Usage
from audiobatch.tasks.model.profiles import ModelProfile, estimate_text_tokens
from audiobatch.tasks.model.prompts import (context_instruction, narration_system_prompt,
                                            transcribe_instruction, vocabulary_instruction)
from audiobatch.tasks.text.speakable import spoken_words

CHARS_PER_WORD = 5.7  # average English word plus its space and punctuation


def expected_transcribe_usage(duration_s: float, profile: ModelProfile, prompt: str | None = None,
                              language: str | None = None, context_words: int = 0,
                              vocabulary: tuple[str, ...] = ()) -> Usage:
    """One transcription request of `duration_s` seconds of audio (with `context_words` of the
    transcript before it as context, and the vocabulary's hints)."""
    transcript_chars = duration_s * profile.speech_words_per_minute / 60.0 * CHARS_PER_WORD
    context = context_instruction("x" * round(context_words * CHARS_PER_WORD)) if context_words else ""
    return Usage(
        prompt_text_tokens=estimate_text_tokens(transcribe_instruction(prompt, language))
        + (estimate_text_tokens(context) if context else 0)
        + (estimate_text_tokens(vocabulary_instruction(vocabulary)) if vocabulary else 0),
        prompt_audio_tokens=profile.input_audio_tokens(duration_s),
        completion_text_tokens=math.ceil(transcript_chars / 4),
    )


def narration_seconds(text: str, profile: ModelProfile) -> float:
    """Expected length of `text` spoken at speed 1.0 by the profile's voice."""
    return spoken_words(text) / profile.words_per_minute * 60.0


def expected_narrate_usage(text: str, profile: ModelProfile, instructions: str | None = None) -> Usage:
    """One narration request: system + text in; the spoken audio and its transcript out."""
    return Usage(
        prompt_text_tokens=(estimate_text_tokens(narration_system_prompt(instructions))
                            + estimate_text_tokens(text)),
        completion_text_tokens=estimate_text_tokens(text),
        completion_audio_tokens=profile.output_audio_tokens(narration_seconds(text, profile)),
    )
