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
  (tasks/transcription/bounds.py): checked first, with QA on or off, and such a reply is never
  kept, so nothing downstream (alignment, captions) works on it.

Checks against the audio (`Evidence`; tasks/transcription/agreement.py gathers it): the reply is
force-aligned to its chunk by the embedded Whisper, which scores every word by how likely the
audio makes it (one encoder pass; the alignment word times need anyway):
- "mismatch": the words are not what the audio holds (mean word probability below LOW_FIT:
  answers, chatter, another recording's text score 0.02-0.24 on the shared clips, transcripts
  0.41-0.97), or a run of words the audio has no time for (squeezed to nothing at the end);
- "truncated": speech left after the last word (the text stops before the audio does);
- "loop" only when the repeated words are squeezed: a speaker who says "word, word, word,
  word" gets time for every one of them, and the repetition stands;
- "non-speech": words placed wholly where the voice detector hears no speech (music, noise,
  silence: Whisper invents text there).
What the alignment leaves in doubt (a mean in the grey zone, a slow rate, speech uncovered) is
decided by the embedded Whisper's own hearing of the chunk, asked only then (`Verdict.doubt`).

`strip_wrapper` removes benign chatter lines around a transcript; the caller keeps the rest
only when it then passes every check (and agrees with the local engine, when there is one).
Inputs are model replies: hostile (DESIGN.md "Trust model"); nothing here executes or fetches.
"""
from __future__ import annotations

import difflib
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from audiobatch.tasks.captions.words import Word
from audiobatch.tasks.transcription.bounds import NO_SPACE_SCRIPT, spoken_words, units, words_of


# Words per second of speech: conversational English runs ~2-3.5; fast speakers ~4.5. Beyond
# these bounds the reply cannot be a transcript of that much speech. Scripts without spaces
# count characters (Chinese ~4-6, Japanese ~6-9 per second).
WORDS_PER_S = (0.4, 6.5)
CHARS_PER_S = (0.8, 14.0)
MIN_SPEECH_S = 3.0  # below this, rates say too little
REFERENCE_RATIO = (0.5, 2.0)  # reply words / local engine words
CUT_SHORT_SHARE = 0.7  # a reply with fewer words than this share of the local engine's stops early
MIN_REFERENCE_SIMILARITY = 0.35  # share of words in common with the local engine's transcript
LOOP_GZIP_RATIO = 2.4
LOOP_REPEATS = 4  # the same phrase this many times in a row
# Alignment scores (mean word probability), chosen on the tuning clips (tests/helpers/heldout.py)
LOW_FIT = 0.25  # below: the audio does not hold these words
HIGH_FIT = 0.35  # at or above: it does; in between, the embedded Whisper's hearing decides
EDGE_FIT_SHARE = 0.5  # a first/last line under LOW_FIT and this share of the rest: a wrapper
SQUEEZED_S = 0.02  # a word the aligner gives no more time than this has no audio of its own
MAX_SQUEEZED_RUN = 3  # more squeezed words in a row than this: text the audio cannot hold
MIN_REPEAT_WORD_S = 0.15  # a spoken repetition gets at least this per word on average
UNCOVERED_S = 1.0  # speech after the last word: more than this (and UNCOVERED_SHARE) is cut
UNCOVERED_SHARE = 0.25
SLOW_WORDS_PER_S = 1.8  # fewer words per second of speech: ask the embedded Whisper
NON_SPEECH_PAD_S = 0.25  # a word this close to speech is not "over non-speech"

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


@dataclass(frozen=True)
class Evidence:
    """What the audio says about a reply: VAD speech spans of the chunk, the reply's words
    aligned to it (None: no aligner), and the embedded Whisper's hearing (None: not asked)."""

    spans: Sequence[tuple[float, float]] = ()
    words: Sequence[Word] | None = None
    reference: str | None = None
    no_speech: Sequence[tuple[float, float]] = ()  # where nobody surely speaks (music, noise)
    sound: Sequence[tuple[float, float]] = ()  # where the level is above the quiet (any sound)

    @property
    def speech_s(self) -> float:
        return sum(b - a for a, b in self.spans)


@dataclass(frozen=True)
class Verdict:
    problems: tuple[str, ...]
    text: str  # the reply's text, or what is left once a benign wrapper is stripped
    doubt: bool = False  # the alignment cannot tell: the embedded Whisper's hearing should
    agreement: float | None = None  # how well the text agrees with the audio (0..1)
    non_speech: tuple[int, ...] = field(default=())  # words over non-speech (word indexes)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(text: str, *, finish_reason: str | None, refusal: str | None,
          evidence: Evidence = Evidence()) -> list[str]:
    """Every problem found in a reply by its text and, when there is evidence, its audio
    (empty: it reads as a transcript of the chunk)."""
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
    if is_loop(text) and not repetition_heard(evidence.words):
        problems.append("loop")
    problems += [p for p in audio_problems(text, evidence) if p not in problems]
    reference = evidence.reference
    if not problems and reference is not None and cut_short(text, reference):
        problems.append("truncated")
    if not problems and coverage_problem(text, evidence.speech_s, reference):
        problems.append("coverage")
    if not problems and reference is not None and disagrees(text, reference):
        problems.append("mismatch")  # fluent text about something else than what was said
    return problems


def fit(words: Sequence[Word]) -> float:
    """How likely the audio makes the words: their mean alignment probability (0..1)."""
    return sum(w.probability for w in words) / len(words) if words else 0.0


def squeezed_run(words: Sequence[Word]) -> int:
    """The longest run of words the aligner could give no time: text beyond the audio."""
    longest = run = 0
    for word in words:
        run = run + 1 if word.end_s - word.start_s <= SQUEEZED_S else 0
        longest = max(longest, run)
    return longest


def repetition_heard(words: Sequence[Word] | None) -> bool:
    """A repeated phrase is real speech ("word, word, word, word") when the audio has time
    for every word; a decoding loop's repeats are squeezed into nothing."""
    if not words:
        return False
    spoken_s = sum(w.end_s - w.start_s for w in words)
    return squeezed_run(words) <= MAX_SQUEEZED_RUN and spoken_s >= MIN_REPEAT_WORD_S * len(words)


def uncovered_speech_s(words: Sequence[Word], spans: Sequence[tuple[float, float]]) -> float:
    """Seconds of speech after the last word that has time of its own."""
    timed = [w.end_s for w in words if w.end_s - w.start_s > SQUEEZED_S]
    last = max(timed, default=0.0)
    return sum(max(0.0, b - max(a, last)) for a, b in spans)


def non_speech_words(words: Sequence[Word], no_speech: Sequence[tuple[float, float]]
                     ) -> tuple[int, ...]:
    """Indexes of the words placed inside a stretch where the voice detector is sure nobody
    speaks (`tasks.audio.vad.no_speech_stretches`), NON_SPEECH_PAD_S or more from its edges."""
    pad = NON_SPEECH_PAD_S
    return tuple(i for i, w in enumerate(words)
                 if any(a + pad <= w.start_s and w.end_s <= b - pad for a, b in no_speech))


def audio_problems(text: str, evidence: Evidence) -> list[str]:
    """What the alignment shows: words the audio does not hold, speech left untold."""
    words = evidence.words
    if not words:
        return []
    problems = []
    if fit(words) < LOW_FIT or squeezed_run(words) > MAX_SQUEEZED_RUN and not is_loop(text):
        problems.append("mismatch")
    elif without_unheard_edges(text, words) != text.strip():
        problems.append("chatter")  # lines around the transcript that the audio does not hold
    uncovered = uncovered_speech_s(words, evidence.spans)
    if uncovered > UNCOVERED_S and uncovered > UNCOVERED_SHARE * evidence.speech_s:
        problems.append("truncated")
    return problems


def in_doubt(text: str, evidence: Evidence) -> bool:
    """The alignment passes the reply but cannot vouch for it: a middling score, a slow rate
    of words for the speech, or speech left after the last word."""
    words = evidence.words
    if not words or evidence.reference is not None:
        return False
    # the voice detector can sleep through speech (band-limited, noisy): the span the aligner
    # spread the words over counts too (a text cut short is stretched over the whole audio)
    speech_s = max(evidence.speech_s, words[-1].end_s - words[0].start_s)
    slow = speech_s > 0 and units(text) < SLOW_WORDS_PER_S * speech_s
    uncovered = uncovered_speech_s(words, evidence.spans)
    # sound after the last word, by level: where the voice detector slept through a line
    sound_after = uncovered_speech_s(words, evidence.sound)
    sound_s = sum(b - a for a, b in evidence.sound)
    return fit(words) < HIGH_FIT or slow or uncovered > min(UNCOVERED_S, 0.5 * speech_s) / 2 \
        or sound_after > max(UNCOVERED_S / 2, UNCOVERED_SHARE * sound_s)


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
    low, high = CHARS_PER_S if NO_SPACE_SCRIPT.search(text) else WORDS_PER_S
    return not low * speech_s <= count <= high * speech_s + 3


def cut_short(text: str, reference: str) -> bool:
    """The reply holds far fewer words than the embedded Whisper heard (a text that stops
    early, its finish_reason notwithstanding)."""
    heard = units(reference)
    return heard >= 2 and units(text) < CUT_SHORT_SHARE * heard


def similarity(text: str, reference: str) -> float:
    """Share of words the two texts have in common, in order (0..1)."""
    a, b = spoken_words(text), spoken_words(reference)  # "1 0 9" and "one zero nine" agree
    if not a and not b:
        return 1.0
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return 2 * sum(block.size for block in matcher.get_matching_blocks()) / (len(a) + len(b))


def disagrees(text: str, reference: str) -> bool:
    return len(spoken_words(reference)) >= 6 and similarity(text, reference) < MIN_REFERENCE_SIMILARITY


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


def judge(text: str, *, finish_reason: str | None, refusal: str | None,
          evidence: Evidence = Evidence()) -> Verdict:
    """The reply's problems, or - when its only problem is a wrapper around a transcript that
    then passes every check - the stripped transcript with no problem. `doubt`: the caller
    should hear the chunk and judge again with `evidence.reference`."""
    problems = check(text, finish_reason=finish_reason, refusal=refusal, evidence=evidence)
    if set(problems) <= {"chatter", "answer", "mismatch"} and problems:
        for stripped, kept in _unwrapped(text, evidence.words):
            if _faithful(stripped, kept, finish_reason, refusal, evidence):
                return Verdict((), stripped, agreement=_agreement(stripped, evidence, kept))
    doubt = not problems and in_doubt(text, evidence)
    non_speech = non_speech_words(evidence.words, evidence.no_speech) if evidence.words else ()
    return Verdict(tuple(problems), text, doubt, _agreement(text, evidence, evidence.words),
                   non_speech)


def _agreement(text: str, evidence: Evidence, words: Sequence[Word] | None) -> float | None:
    if evidence.reference is not None:
        return similarity(text, evidence.reference)
    return fit(words) if words else None


def _unwrapped(text: str, words: Sequence[Word] | None) -> list[tuple[str, Sequence[Word] | None]]:
    """Candidates for the transcript inside a wrapper, each with its aligned words (when the
    reply was aligned): without the lines the text checks call chatter, and without first and
    last lines the audio does not hold."""
    candidates = [strip_wrapper(text)]
    if words:
        candidates.append(without_unheard_edges(text, words))
    found = []
    for candidate in dict.fromkeys(candidates):
        if candidate and candidate != text:
            found.append((candidate, _words_within(text, candidate, words) if words else None))
    return found


def _words_within(text: str, part: str, words: Sequence[Word]) -> Sequence[Word]:
    """The aligned words of `part`, a piece of `text` (the words of `text`, in order)."""
    from audiobatch.tasks.captions.words import text_words

    start = text.find(part)
    spans = text_words(text)
    if start < 0 or len(spans) != len(words):
        return ()
    return [w for (a, b), w in zip(spans, words) if start <= a and b <= start + len(part)]


def without_unheard_edges(text: str, words: Sequence[Word]) -> str:
    """The text without first and last lines whose words the audio does not hold: scoring
    under LOW_FIT and under EDGE_FIT_SHARE of the rest (a wrapper's words are not in the
    audio). `words`: the text's words, aligned, in order."""
    lines = _line_words(text)
    if len(lines) < 2 or lines[-1][3] != len(words):
        return text
    keep = list(range(len(lines)))

    def rest_fit(dropped: int) -> float:
        return fit([w for k in keep if k != dropped for w in words[lines[k][2]:lines[k][3]]])

    for end in (0, -1):
        while len(keep) > 1:
            k = keep[end]
            line_fit = fit(words[lines[k][2]:lines[k][3]])
            if line_fit >= min(LOW_FIT, EDGE_FIT_SHARE * rest_fit(k)):
                break
            keep.pop(end)
    return text[lines[keep[0]][0]:lines[keep[-1]][1]].strip()


def _line_words(text: str) -> list[tuple[int, int, int, int]]:
    """(start, end) characters and [first, end) word indexes of each line holding words."""
    from audiobatch.tasks.captions.words import text_words

    spans = text_words(text)
    lines, offset, index = [], 0, 0
    for line in text.splitlines(keepends=True):
        end = offset + len(line)
        first = index
        while index < len(spans) and spans[index][0] < end:
            index += 1
        if index > first:
            lines.append((offset, end, first, index))
        offset = end
    return lines


def _faithful(stripped: str, kept: Sequence[Word] | None, finish_reason: str | None,
              refusal: str | None, evidence: Evidence) -> bool:
    """What is left must be shown to be the transcript: it passes every check of the text,
    and agrees with the local engine, or its words score as the audio's own, or (with no
    evidence but the speech's length) it fits that length."""
    if check(stripped, finish_reason=finish_reason, refusal=refusal,
             evidence=Evidence(evidence.spans, None, evidence.reference)):
        return False
    if evidence.reference is not None:
        return similarity(stripped, evidence.reference) >= 0.6
    if kept is not None:
        return fit(kept) >= HIGH_FIT and squeezed_run(kept) <= MAX_SQUEEZED_RUN
    return evidence.speech_s >= MIN_SPEECH_S and not coverage_problem(stripped, evidence.speech_s, None)
