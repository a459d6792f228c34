"""Broadcast-grade captions (tasks/captions/cues.py): every cue of every transcript keeps the
Netflix/BBC rules - 42 characters a line, 2 lines, 1-7 s on screen, 20 characters a second
(17 for children), lines broken at phrase boundaries - checked on the files a viewer gets.

Word streams here are generated with known times (property-based where it helps); real speech
is checked end to end in tests/test_e2e_transcribe.py (the 171 s reading) and
tests/test_narration_captions.py.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiobatch.tasks.captions.cues import CaptionRules, CueWord, build_cues, caption_rules
from audiobatch.tasks.captions.files import render_srt, render_vtt
from audiobatch.tasks.captions.segments import Segment, caption_segments, chunk_words
from audiobatch.tasks.captions.words import Word
from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.text.speakable import word_breaks
from tests.helpers.captions import breaks_after_function_words, parse_captions, rule_breaks

LJ = ("Printing, in the only sense with which we are at present concerned, differs from most if "
      "not from all the arts and crafts represented in the Exhibition in being comparatively "
      "modern. For although the Chinese took impressions from wood blocks engraved in relief "
      "for centuries before the woodcutters of the Netherlands, by a similar process, produced "
      "the block books, which were the immediate predecessors of the true printed book, the "
      "invention of movable metal letters in the middle of the fifteenth century may justly be "
      "considered as the invention of the art of printing. And it is worth mention in passing "
      "that, as an example of fine typography, the earliest book printed with movable types, "
      "the Gutenberg, or forty-two line Bible of about 1455, has never been surpassed.")


def spoken(text: str, chars_per_s: float = 14.0, pauses: dict[int, float] | None = None,
           start_s: float = 0.5) -> list[Word]:
    """Each word of `text` said at `chars_per_s` (a space counted), with `pauses` after
    some words (by index) and a short breath after each sentence."""
    spans, strengths = word_breaks(text)
    words, t = [], start_s
    for i, ((a, b), strength) in enumerate(zip(spans, strengths)):
        length = (b - a + 1) / chars_per_s
        words.append(Word(text[a:b], round(t, 3), round(t + length * 0.9, 3), 0.9))
        t += length + (pauses or {}).get(i, 0.35 if strength >= 2 else 0.0)
    return words


def captions_of(text: str, words: list[Word], rules: CaptionRules = CaptionRules(),
                end_s: float | None = None) -> list[Segment]:
    return caption_segments([chunk_words(0, text, words)], rules, end_s)


def check_files(segments: list[Segment], rules: CaptionRules) -> None:
    """Both files, parsed as a viewer's player would, keep every rule; same cues in each."""
    srt, vtt = parse_captions(render_srt(segments)), parse_captions(render_vtt(segments))
    assert srt == vtt and len(srt) == len(segments)
    assert rule_breaks(srt, rules) == []


def test_a_paragraph_of_read_speech_keeps_every_rule_and_breaks_at_phrases() -> None:
    words = spoken(LJ)
    segments = captions_of(LJ, words)
    check_files(segments, CaptionRules())
    assert " ".join(s.text for s in segments) == LJ  # every word once, in order
    shown = parse_captions(render_srt(segments))
    assert breaks_after_function_words(shown) == []
    assert any(len(c.lines) == 2 for c in shown)
    for cue in shown:
        if len(cue.lines) == 2:  # balanced: neither line under a third of the other
            short, long = sorted(len(line) for line in cue.lines)
            assert short >= long / 3, cue.lines
    # a cue appears with its first word and stays until its last is said (or the next
    # cue's two-frame gap begins, when words run on)
    for segment in segments:
        assert segment.start_s == segment.words[0].start_s
        assert segment.end_s >= segment.words[-1].end_s - CaptionRules().gap_s


def test_text_that_fits_one_line_stays_on_one_line() -> None:
    text = "Short and sweet."
    segments = captions_of(text, spoken(text))
    assert [s.lines for s in segments] == [("Short and sweet.",)]


def test_a_short_answer_stays_a_second_and_fast_speech_is_held_longer_into_the_pause() -> None:
    text = "Yes. Then the rest of the answer follows much later in the recording."
    words = spoken(text, pauses={0: 3.0})
    segments = captions_of(text, words)
    assert segments[0].text == "Yes."
    assert segments[0].end_s - segments[0].start_s == pytest.approx(1.0, abs=0.01)
    fast = "Seventeen quick words spoken in a burst."  # 40 characters in one second
    words = spoken(fast, chars_per_s=40.0, pauses={6: 2.5})
    [segment] = captions_of(fast, words)
    assert segment.end_s - segment.start_s >= len(fast) / 20 - 1e-9
    assert segment.end_s > words[-1].end_s  # held into the pause to be read


def test_children_preset_reads_slower_and_limits_can_be_set() -> None:
    assert caption_rules("children").cps == 17
    rules = caption_rules("children", line_chars=32, lines=1, max_s=5)
    assert (rules.line_chars, rules.lines, rules.max_s, rules.cps) == (32, 1, 5, 17)
    segments = captions_of(LJ, spoken(LJ, chars_per_s=12.0), rules)
    check_files(segments, rules)
    assert all(len(s.lines) == 1 and len(s.lines[0]) <= 32 for s in segments)
    with pytest.raises(ConfigError, match="preset"):
        caption_rules("toddlers")
    with pytest.raises(ConfigError, match="longest caption"):
        caption_rules(min_s=3.0, max_s=2.0)


def test_a_word_longer_than_a_line_is_cut_into_lines_rather_than_lost() -> None:
    text = "See https://example.org/a/very/long/path/that/never/ends/anywhere/soon for more."
    segments = captions_of(text, spoken(text))
    lines = [line for s in segments for line in s.lines]
    assert all(len(line) <= 42 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")


def test_a_change_of_speaker_always_ends_a_cue_and_vtt_names_the_voice() -> None:
    words = [CueWord(w, i * 0.4, i * 0.4 + 0.3, 0, speaker="A" if i < 3 else "B")
             for i, w in enumerate("so you came back yes I did".split())]
    cues = build_cues(words, CaptionRules())
    assert [c.text for c in cues] == ["so you came", "back yes I did"]
    segment = Segment(0, 0.0, 1.2, "so you came", speaker="SPEAKER_1 <b>")
    assert "<v SPEAKER_1 &lt;b&gt;>so you came" in render_vtt([segment])


# --- every rule, on any speech that allows them ------------------------------------------------

VOCABULARY = ["the", "a", "of", "to", "and", "in", "printing", "book", "letters", "Gutenberg",
              "typography", "comparatively", "represented", "woodcutters", "impressions", "it",
              "was", "considered", "invention", "movable", "metal", "century", "Netherlands"]


@st.composite
def speech(draw: st.DrawFn) -> tuple[str, list[Word], float]:
    """Sentences of real words said at 8-15 characters a second (the rate of read and
    conversational English), with pauses of 0-3 s between some of them."""
    sentences = draw(st.lists(st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=25),
                              min_size=1, max_size=12))
    text = " ".join(" ".join(s).capitalize() + draw(st.sampled_from([".", "?", ",", ";"]))
                    for s in sentences)
    rate = draw(st.floats(8.0, 15.0))
    n = len(word_breaks(text)[0])
    pauses = draw(st.dictionaries(st.integers(0, n - 1), st.floats(0.0, 3.0), max_size=n // 3))
    words = spoken(text, rate, pauses)
    return text, words, words[-1].end_s + draw(st.floats(0.0, 2.0))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(speech(), st.sampled_from(["broadcast", "children"]))
def test_every_cue_keeps_every_rule_when_the_speech_allows_it(spoken_text, preset: str) -> None:
    text, words, end_s = spoken_text
    rules = caption_rules(preset)
    segments = captions_of(text, words, rules, end_s)
    assert " ".join(s.text for s in segments) == text
    shown = parse_captions(render_vtt(segments))
    problems = rule_breaks(shown, rules)
    # the one rule speech can make impossible: a word said alone too near the end
    problems = [p for p in problems if not (p.endswith(" s") and shown[-1].end_s >= end_s - 0.002
                                            and p.startswith(f"cue {len(shown) - 1}:"))]
    assert problems == []
    assert all(s.start_s == s.words[0].start_s for s in segments)


@settings(max_examples=60, deadline=None)
@given(st.floats(22.0, 40.0))
def test_speech_faster_than_the_reading_speed_still_gives_well_formed_cues(rate: float) -> None:
    """No split can keep 20 characters a second when the speaker says 30 without a pause:
    the lines, the length and the order still hold, and the cues run back to back."""
    words = spoken(LJ, rate, pauses={})
    segments = captions_of(LJ, words)
    shown = parse_captions(render_srt(segments))
    assert [p for p in rule_breaks(shown, CaptionRules()) if "characters a second" not in p
            and "on screen" not in p] == []
    assert " ".join(s.text for s in segments) == LJ
