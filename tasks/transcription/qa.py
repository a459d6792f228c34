"""Transcript QA: is a model's reply to a chunk a transcript of that chunk?

Audio LLMs fail in ways HTTP does not show: a 200 whose text chatters ("Sure! Here is the
transcript:"), refuses, answers the speaker instead of transcribing, loops on a phrase, or
stops early (`finish_reason: "length"`). `check` names every problem it finds in one reply;
the caller (tasks/transcription/transcribe.py) re-asks once, stricter, and keeps what still fails with
flags - never silently as clean.

Checks (each returns a short reason, the flag's text):
- "truncated": finish_reason other than "stop" (or none given);
- "refusal": the model's refusal field, or a reply that says it cannot or will not;
- "chatter": lines addressed to the user before or after the words (preambles, offers);
- "answer": the reply talks about the audio or answers it ("The speaker says...");
- "loop": a phrase repeated over and over, or text that compresses like a loop (Whisper's
  own test: gzip ratio > 2.4);
- "coverage": words per second of VAD speech far outside what people say in the language, or
  a word count far from what the local engine hears in the same chunk (when it is asked);
- "overlong": more words than the chunk's audio could hold at any speaking rate
  (`overlong`, MAX_WORDS_PER_S): checked first, with QA on or off, and such a reply is never
  kept, so nothing downstream (alignment, captions) works on it.

`strip_wrapper` removes benign chatter lines around a transcript; the caller keeps the rest
only when it then passes every check (and agrees with the local engine, when there is one).
Inputs are model replies: hostile (DESIGN.md "Trust model"); nothing here executes or fetches.
"""
from __future__ import annotations

import difflib
import re
import zlib
from dataclasses import dataclass


# Words per second of speech: conversational English runs ~2-3.5; fast speakers ~4.5. Beyond
# these bounds the reply cannot be a transcript of that much speech. Scripts without spaces
# count characters (Chinese ~4-6, Japanese ~6-9 per second).
WORDS_PER_S = (0.4, 6.5)
CHARS_PER_S = (0.8, 14.0)
MIN_SPEECH_S = 3.0  # below this, rates say too little
# The hard bound per second of audio (not of speech): far above any speaker (auctioneers ~6).
MAX_WORDS_PER_S, MAX_CHARS_PER_S, MAX_UNITS_EXTRA = 10.0, 20.0, 20
REFERENCE_RATIO = (0.5, 2.0)  # reply words / local engine words
MIN_REFERENCE_SIMILARITY = 0.35  # share of words in common with the local engine's transcript
LOOP_GZIP_RATIO = 2.4
LOOP_REPEATS = 4  # the same phrase this many times in a row

_REFUSAL = re.compile(
    r"^\W*(i['’]?m sorry|i am sorry|sorry,? (but )?i|i can(['’]?t|not)|i['’]?m (not )?(able|unable)|"
    r"i am (not )?(able|unable)|unfortunately,? i|as an ai\b|i won['’]?t\b|i do not feel comfortable)",
    re.IGNORECASE)
_PREAMBLE = re.compile(
    r"^\W*((sure|certainly|of course|absolutely|okay|ok|alright)\b[^\n]{0,40}\b(here|transcri\w*)|"
    r"here(['’]s| is| are)\b[^\n]{0,60}\b(transcri\w*|audio|recording|what)|below is\b|"
    r"the following is\b|transcript(ion)?\s*:|here you go\b)", re.IGNORECASE)
_POSTAMBLE = re.compile(
    r"^\W*(let me know|i hope this|if you (need|have|would)|feel free|is there anything|"
    r"would you like|please note|note:)", re.IGNORECASE)
_ANSWER = re.compile(
    r"^\W*(the (speaker|audio|recording|clip|person|man|woman|narrator)\b[^.]{0,80}"
    r"\b(says|said|talks|speaks|discuss\w*|is (saying|talking|speaking|describing|about)|describes|mentions|explains|asks)|"
    r"this (audio|recording|clip)\b|in (this|the) (audio|recording|clip)\b|it sounds like\b|"
    r"(great|good|interesting) question\b)", re.IGNORECASE)
_NO_SPACE_SCRIPT = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


@dataclass(frozen=True)
class Verdict:
    problems: tuple[str, ...]
    text: str  # the reply's text, or what is left once a benign wrapper is stripped

    @property
    def ok(self) -> bool:
        return not self.problems


def words_of(text: str) -> list[str]:
    return re.findall(r"\w+(?:['’]\w+)*", text.lower())


def check(text: str, *, finish_reason: str | None, refusal: str | None, speech_s: float,
          reference: str | None = None) -> list[str]:
    """Every problem found in a reply (empty: it reads as a transcript of the chunk)."""
    problems = []
    if finish_reason not in ("stop", None):
        problems.append("truncated")
    lines = [line for line in text.splitlines() if line.strip()]
    if refusal or (lines and _REFUSAL.match(lines[0])):
        problems.append("refusal")
    if lines and (_PREAMBLE.match(lines[0]) or _POSTAMBLE.match(lines[-1])):
        problems.append("chatter")
    if lines and _ANSWER.match(lines[0]):
        problems.append("answer")
    if is_loop(text):
        problems.append("loop")
    if not problems and coverage_problem(text, speech_s, reference):
        problems.append("coverage")
    if not problems and reference is not None and disagrees(text, reference):
        problems.append("answer")  # fluent text about something else than what was said
    return problems


def is_loop(text: str) -> bool:
    """Whisper's compression test, plus a phrase of 1-8 words repeated LOOP_REPEATS times."""
    encoded = text.encode("utf-8")
    if len(encoded) >= 60 and len(encoded) / len(zlib.compress(encoded)) > LOOP_GZIP_RATIO:
        return True
    words = words_of(text)
    for size in range(1, 9):
        for start in range(0, max(0, len(words) - size * LOOP_REPEATS) + 1):
            phrase = words[start:start + size]
            if all(words[start + k * size:start + (k + 1) * size] == phrase
                   for k in range(1, LOOP_REPEATS)):
                return True
    return False


def units(text: str) -> int:
    """Words, or characters for scripts written without spaces."""
    no_space = len(_NO_SPACE_SCRIPT.findall(text))
    return no_space + len(words_of(_NO_SPACE_SCRIPT.sub(" ", text))) if no_space else len(words_of(text))


def overlong(text: str, audio_s: float) -> bool:
    """More words (characters, for scripts without spaces) than `audio_s` of audio can hold."""
    limit = MAX_CHARS_PER_S * audio_s + MAX_UNITS_EXTRA
    if len(text) <= limit:  # fewer characters than the most words: within the bound
        return False
    if len(text) > 64 * limit:  # no need to count 50,000 words
        return True
    per_s = MAX_CHARS_PER_S if _NO_SPACE_SCRIPT.search(text) else MAX_WORDS_PER_S
    return units(text) > per_s * audio_s + MAX_UNITS_EXTRA


def coverage_problem(text: str, speech_s: float, reference: str | None) -> bool:
    """Far too few or too many words for the speech heard (and for what the local engine
    heard in the same audio, when it was asked)."""
    count = units(text)
    if reference is not None:
        expected = units(reference)
        if expected >= 4 or count >= 8:
            low, high = REFERENCE_RATIO
            return not low * max(expected, 1) <= count <= high * max(expected, 2) + 2
        return False
    if speech_s < MIN_SPEECH_S:
        return False
    low, high = CHARS_PER_S if _NO_SPACE_SCRIPT.search(text) else WORDS_PER_S
    return not low * speech_s <= count <= high * speech_s + 3


def similarity(text: str, reference: str) -> float:
    """Share of words the two texts have in common, in order (0..1)."""
    a, b = words_of(text), words_of(reference)
    if not a and not b:
        return 1.0
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return 2 * sum(block.size for block in matcher.get_matching_blocks()) / (len(a) + len(b))


def disagrees(text: str, reference: str) -> bool:
    return len(words_of(reference)) >= 6 and similarity(text, reference) < MIN_REFERENCE_SIMILARITY


def strip_wrapper(text: str) -> str:
    """The reply without chatter lines before and after it (and quotes around what is left)."""
    lines = [line for line in text.splitlines() if line.strip()]
    while lines and (_PREAMBLE.match(lines[0]) or _ANSWER.match(lines[0]) and lines[0].rstrip().endswith(":")):
        lines = lines[1:]
    while lines and _POSTAMBLE.match(lines[-1]):
        lines = lines[:-1]
    body = "\n".join(lines).strip()
    if len(body) >= 2 and body[0] in "\"“'«" and body[-1] in "\"”'»":
        body = body[1:-1].strip()
    return body


def judge(text: str, *, finish_reason: str | None, refusal: str | None, speech_s: float,
          reference: str | None = None) -> Verdict:
    """The reply's problems, or - when its only problem is a wrapper around a transcript that
    then passes every check - the stripped transcript with no problem."""
    problems = check(text, finish_reason=finish_reason, refusal=refusal, speech_s=speech_s,
                     reference=reference)
    if set(problems) <= {"chatter", "answer"} and problems:
        stripped = strip_wrapper(text)
        if stripped and stripped != text and not check(
                stripped, finish_reason=finish_reason, refusal=refusal, speech_s=speech_s,
                reference=reference) and _faithful(stripped, speech_s, reference):
            return Verdict((), stripped)
    return Verdict(tuple(problems), text)


def _faithful(stripped: str, speech_s: float, reference: str | None) -> bool:
    """What is left must be shown to be the transcript: it agrees with the local engine, or
    (without one) its length fits the speech."""
    if reference is not None:
        return similarity(stripped, reference) >= 0.6
    return speech_s >= MIN_SPEECH_S and not coverage_problem(stripped, speech_s, None)
