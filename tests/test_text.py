"""Narration text: speakable text from Markdown/plain text, and chunks within the word budget."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.text.speakable import (count_words, max_words_per_request, speakable_text,
                                             split_for_narration, spoken_words)
from tests.helpers.data import TEXTS


SENTENCE_END = ('.', '!', '?', '."', '?"', '!"', '.)', ".'", '.”')


def assert_lossless(text: str, chunks: list[str], max_words: int) -> None:
    # Chunks may be cut between characters of a script written without spaces: compare the
    # text without its whitespace (and, for spaced scripts, word by word).
    assert "".join("".join(chunks).split()) == "".join(text.split()), "text lost, doubled or reordered"
    if not any(spoken_words(c) < count_words(c) for c in chunks):
        assert " ".join(chunks).split() == text.split(), "words lost, doubled or reordered"
    assert all(1 <= count_words(c) and spoken_words(c) <= max_words + 1e-9 for c in chunks)
    assert all(c == c.strip() for c in chunks)


# --- budgets ----------------------------------------------------------------------------

def test_default_budget_gives_about_three_minutes_of_words() -> None:
    # 4096 tokens / 20 per s = 204.8 s; x 0.85 margin x 160 wpm / 60 = 464 words
    assert max_words_per_request(4096, 20, 160) == 464
    assert max_words_per_request(4096, 20, 174) == 504  # the local voice speaks faster
    assert max_words_per_request(8192, 20, 160) == 928


def test_budget_too_small_for_a_word_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_output_audio_tokens=5"):
        max_words_per_request(5, 20, 160)
    with pytest.raises(ConfigError):
        split_for_narration("some words", 0)


def test_count_words_counts_whitespace_separated_tokens() -> None:
    assert count_words("It costs $1,200.50, e.g. for U.S. users.\n\nDone") == 8
    assert count_words("  \n\t ") == 0


# --- speakable text -----------------------------------------------------------------------

def test_show_notes_markdown_becomes_speakable_sentences() -> None:
    spoken = speakable_text((TEXTS / "show_notes.md").read_text(), markdown=True)
    paragraphs = spoken.split("\n\n")
    # headings are sentences of their own, with a full stop so the voice pauses
    assert paragraphs[0] == "Episode 42: Shipping audio pipelines at scale."
    assert "What we cover." in paragraphs
    # emphasis, heading, quote and list markup is gone; the URL is spoken as its domain
    for markup in ("*", "#", "> ", "https", "/postmortem", "1. ", "2. "):
        assert markup not in spoken
    assert "(see example.com for the write-up)." in spoken
    # list items became sentences, each closed so the voice pauses between them
    assert "easy to get wrong. Retries: the difference" in spoken
    assert '"this file is broken". The 2 a.m. page' in spoken
    # numbers, money and titles are left for the TTS engine, unbroken; the abbreviations voices
    # read letter by letter are written out (tasks/text/spoken.py)
    for kept in ("$4.20", "3.5-hour", "1,250", "99.9%", "Dr. Maya Chen, PhD,", "Mr. J. R. Smith Junior",
                 'for example "slow down"', "2 a.m.", "The Build Log"):
        assert kept in spoken


def test_markdown_constructs_are_read_plainly() -> None:
    raw = """Intro with [a link](https://x.org/page), `inline_code`, ![a chart](chart.png) and <b>tags</b>.

```python
print("never read aloud")
```

> quoted wisdom
> over two lines

| Plan | Price |
|------|-------|
| Pro  | $20   |

- first point
- second point!

<div>html <i>block</i></div>
"""
    spoken = speakable_text(raw, markdown=True)
    assert spoken.split("\n\n") == [
        "Intro with a link, inline_code, and tags.",
        "quoted wisdom over two lines",
        "Plan, Price. Pro, $20.",
        "first point. second point!",
        "html block",
    ]


def test_bare_urls_are_shortened_to_their_domain_and_keep_punctuation() -> None:
    spoken = speakable_text("Read https://www.Example.com/a/b?q=1, then (https://en.wikipedia.org/wiki/"
                            "Foo_(bar)). Mail jane.doe@example.com.", markdown=False)
    assert spoken == ("Read example.com, then (en.wikipedia.org). "
                      "Mail jane.doe@example.com.")


def test_emoji_control_and_zero_width_characters_are_removed() -> None:
    raw = "Launch 🚀 day 👍🏽! Family 👨‍👩‍👧 in 🇫🇷 ✅.\x07 zero\u200bwidth soft\u00adhyphen \ufeffBOM\u200e"
    assert speakable_text(raw, markdown=False) == "Launch day! Family in. zerowidth softhyphen BOM"


def test_letters_of_all_scripts_survive_normalisation() -> None:
    raw = "Café Привет 日本語 مرحبا می\u200cخواهم ＦＵＬＬ ﬁne\u00a0space ½"
    assert speakable_text(raw, markdown=False) == "Café Привет 日本語 مرحبا می\u200cخواهم FULL fine space 1/2"


def test_plain_text_keeps_line_breaks_and_paragraphs_but_not_extra_space() -> None:
    raw = "  Title line\r\nsecond\tline  *not markdown*\r\n\r\n\r\n\r\nNext   paragraph.  \n"
    assert speakable_text(raw, markdown=False) == (
        "Title line\nsecond line *not markdown*\n\nNext paragraph.")


def test_empty_or_unspeakable_input_gives_empty_text() -> None:
    assert speakable_text("", markdown=True) == ""
    assert speakable_text(" \n\n 🎉 \t", markdown=False) == ""
    assert speakable_text("```\ncode only\n```", markdown=True) == ""


# --- splitting ----------------------------------------------------------------------------

def test_empty_or_whitespace_text_gives_no_chunks() -> None:
    assert split_for_narration("", 10) == []
    assert split_for_narration(" \n\n\t ", 10) == []


@pytest.mark.parametrize("sentence", [
    "Dr. Maya Chen met Mr. Smith and Mrs. Jones at St. Louis airport.",
    "Thanks to Mr. J. R. R. Tolkien for the books we read.",
    "The U.S. Army paid $1,200.50 for version 3.14.1 of it.",
    "We met at 3 p.m. yesterday and at 9 a.m. today.",
    "It fixed it, e.g. the crash, i.e. the bug. Really.",
    "Write to jane.doe@example.com or visit example.com/docs today.",
    "See No. 5 on p. 12 of the report for details.",
    'She said "Stop!" and he said "why?" and left.',
    "Wait... what happened here after all?",
    "Pi is about 3.14 and e is about 2.72 roughly.",
])
def test_no_chunk_boundary_at_a_dot_that_does_not_end_a_sentence(sentence: str) -> None:
    # "It rained." plus the start of the sentence fits in the limit, so any false sentence end
    # inside it would be used as the chunk boundary.
    text = "It rained. " + sentence
    assert split_for_narration(text, count_words(sentence)) == ["It rained.", sentence]


@pytest.mark.parametrize("chunks", [
    ['He said "Stop."', "Then he left."],
    ["He left (for good.)", "Then rain fell."],
    ["I waited for ages...", "Then it came, finally."],
    ["We met at 5 p.m.", "The bar shut."],
    ["It ran on version 2.0.", "Now 3.1 runs."],
    ["Really?", '"Yes," she said.'],
])
def test_sentences_end_after_closing_quotes_brackets_and_ellipses(chunks: list[str]) -> None:
    # One word short of the whole text: a missed sentence end would cut elsewhere.
    text = " ".join(chunks)
    assert split_for_narration(text, count_words(text) - 1) == chunks


def test_plain_text_list_items_keep_their_markers() -> None:
    text = "Steps to follow:\n1. Buy eggs\n2. Beat them well\n- Serve hot"
    assert split_for_narration(text, 4) == ["Steps to follow:", "1. Buy eggs", "2. Beat them well",
                                            "- Serve hot"]


def test_paragraph_boundaries_win_over_sentence_boundaries() -> None:
    paragraph = " ".join(["This sentence has exactly eight words in it."] * 30)  # 240 words
    text = f"{paragraph}\n\n{paragraph}"
    assert split_for_narration(text, 300) == [paragraph, paragraph]
    # a chunk under 2/3 full is topped up with whole sentences of the next paragraph
    short = "A short opening paragraph of ten words ends right here."
    chunks = split_for_narration(f"{short}\n\n{paragraph}", 100)
    assert chunks[0] == short + "\n\n" + " ".join(["This sentence has exactly eight words in it."] * 11)
    assert all(c.endswith("in it.") for c in chunks[1:])


def test_small_paragraphs_are_packed_up_to_the_limit() -> None:
    text = "\n\n".join(f"Paragraph {i} has a handful of words." for i in range(100))  # 7 words each
    chunks = split_for_narration(text, 100)
    assert_lossless(text, chunks, 100)
    # 14 whole paragraphs (98 words) per request, not 100 tiny requests
    assert [count_words(c) for c in chunks] == [98] * 7 + [14]


def test_a_400_word_sentence_is_cut_at_clauses_never_inside_words() -> None:
    clauses = (TEXTS / "long_sentence.txt").read_text().rstrip(".\n").split(", ")
    sentence = ", ".join((clauses * 3)[:70])
    sentence = " ".join(sentence.split()[:400]).rstrip(",") + "."
    assert count_words(sentence) == 400
    chunks = split_for_narration(sentence, 60)
    assert_lossless(sentence, chunks, 60)
    assert all(c.endswith(",") for c in chunks[:-1]), "cut somewhere other than a clause mark"
    assert len(chunks) <= 8  # packed: 400 words need at least 7 chunks of 60


def test_a_sentence_without_punctuation_is_cut_between_words() -> None:
    words = [f"word{i}" for i in range(400)]
    chunks = split_for_narration(" ".join(words), 100)
    assert [c.split() for c in chunks] == [words[i:i + 100] for i in range(0, 400, 100)]


def test_dashes_semicolons_and_colons_are_clause_boundaries() -> None:
    text = "one two three — four five six; seven eight nine: ten eleven"
    assert split_for_narration(text, 4) == ["one two three —", "four five six;", "seven eight nine:",
                                            "ten eleven"]


def test_ljspeech_chapter_splits_at_sentence_ends_within_the_default_budget() -> None:
    text = speakable_text((TEXTS / "ljspeech_LJ001.txt").read_text(), markdown=False)
    limit = max_words_per_request(4096, 20, 160)
    chunks = split_for_narration(text, limit)
    assert count_words(text) == 3188  # 3,184 written words; "&c." and the like are said in two
    assert_lossless(text, chunks, limit)
    assert len(chunks) == 8  # 3188 / 464 -> at least 7
    assert all(c.endswith(SENTENCE_END) for c in chunks)
    assert min(count_words(c) for c in chunks[:-1]) > 0.85 * limit  # well packed


def test_long_sentence_file_splits_at_commas() -> None:
    text = speakable_text((TEXTS / "long_sentence.txt").read_text(), markdown=False)
    chunks = split_for_narration(text, 100)
    assert count_words(text) == 243  # data README says 260; whitespace-separated words: 243
    assert_lossless(text, chunks, 100)
    assert len(chunks) == 3 and all(c.endswith(",") for c in chunks[:-1])


def test_show_notes_split_keeps_abbreviations_with_their_sentences() -> None:
    text = speakable_text((TEXTS / "show_notes.md").read_text(), markdown=True)
    chunks = split_for_narration(text, 40)
    assert_lossless(text, chunks, 40)
    for chunk in chunks:
        assert not chunk.endswith(("Dr.", "Mr.", "St.", "J.", "R.", "e.g.", "a.m.")), chunk


def test_ten_thousand_word_chapter_is_fast_and_complete() -> None:
    base = speakable_text((TEXTS / "ljspeech_LJ001.txt").read_text(), markdown=False).split(". ")
    paragraphs = [". ".join(base[i:i + 6]) + "." for i in range(0, len(base), 6)]
    text = "\n\n".join(paragraphs * 4)
    text = text[:[m.end() for m in re.finditer(r"\S+", text)][9_999]]
    assert count_words(text) == 10_000
    started = time.perf_counter()
    chunks = split_for_narration(speakable_text(text, markdown=True), 464)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0
    assert_lossless(text, chunks, 464)
    # no request is wasted on a small chunk: each is at least 2/3 full (paragraphs ~240 words)
    assert all(count_words(c) >= 464 * 2 / 3 for c in chunks[:-1])
    assert len(chunks) <= 26  # 10,000 / 464 = 21.6


# --- property: nothing lost, nothing doubled, every chunk within the limit -----------------

_TOKENS = ["word", "Tolkien", "Dr.", "Mr.", "e.g.", "i.e.", "U.S.", "a.m.", "J.", "etc.", "3.14",
           "$1,200.50", "v1.2.3.", "https://example.com/x.", "jane@example.com", '"Stop."', "(see",
           "it).", "...", "Wait...", "—", "–", "-", "1.", "end.", "End.", "Why?", "Yes!", "so,",
           "then;", "note:", "«quoted»", "日本語。", "emoji🎉"]
_SEPARATORS = [" ", " ", " ", "  ", "\n", "\n\n", "\t", " \n \n "]

token_texts = st.lists(st.tuples(st.sampled_from(_TOKENS), st.sampled_from(_SEPARATORS)),
                       max_size=300).map(lambda pairs: "".join(t + s for t, s in pairs))


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(token_texts, st.text(max_size=400)), max_words=st.integers(1, 40))
def test_property_chunks_are_lossless_and_within_the_limit(text: str, max_words: int) -> None:
    chunks = split_for_narration(text, max_words)
    assert_lossless(text, chunks, max_words)
    assert len(chunks) <= count_words(text)


@settings(max_examples=150, deadline=None)
@given(raw=st.one_of(token_texts, st.text(max_size=300)), markdown=st.booleans())
def test_property_speakable_text_is_clean(raw: str, markdown: bool) -> None:
    spoken = speakable_text(raw, markdown=markdown)
    assert spoken == spoken.strip() and "\n\n\n" not in spoken and "  " not in spoken
    assert not any(ord(c) < 32 and c != "\n" for c in spoken)
    assert speakable_text(spoken, markdown=False) == spoken  # cleaning is idempotent


def test_forms_voices_misread_are_written_as_said() -> None:
    spoken = speakable_text("Printers (e.g. Jenson, 1469-1470) used type, inks, &c. Smith Jr. had a "
                            "Ph.D. He said so, i.e. twice. Call 555-1234.", markdown=False)
    assert spoken == ("Printers (for example Jenson, 1469 to 1470) used type, inks, et cetera. Smith "
                      "Junior had a PhD. He said so, that is twice. Call 555-1234.")
