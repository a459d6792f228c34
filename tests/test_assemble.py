"""tasks.transcription.assemble: chunk transcripts joined with no lost or doubled words, timed segments that
start where the speech does, and well-formed SRT/VTT.

Timing tests use synthetic "speech" (noise bursts at known times) so that the truth is exact;
the end-to-end test on real speech is tests/test_e2e_transcribe.py.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from audiobatch.tasks.audio.prepare import Chunk
from audiobatch.tasks.captions.files import CAPTION_LINE_CHARS, render_srt, render_vtt
from audiobatch.tasks.captions.segments import Segment, chunk_segments
from audiobatch.tasks.transcription.assemble import (build_segments, dedupe_chunk_texts, join_transcripts,
                                                     kept_word_ranges)

RATE = 16000
VOCABULARY = [f"w{i}" for i in range(400)]  # distinct words: a join can be checked exactly


# --- joining chunk transcripts -------------------------------------------------------------

def test_chunks_without_overlap_are_joined_word_for_word() -> None:
    texts = ["The first chunk ends here,", "and the second one follows.", "Then a third."]
    assert join_transcripts(texts) == ("The first chunk ends here, and the second one follows. "
                                       "Then a third.")


def test_empty_chunk_texts_leave_no_double_spaces() -> None:
    assert join_transcripts(["One two.", "", "Three four."]) == "One two. Three four."
    assert join_transcripts(["", ""]) == ""


def test_a_phrase_transcribed_on_both_sides_of_a_cut_is_kept_once() -> None:
    # Without overlap a model sometimes hears the same two words at the end of one chunk and
    # the start of the next: only that exact repeat at the boundary is dropped.
    assert join_transcripts(["we went to the market", "the market was closed"]) == \
        "we went to the market was closed"


def test_a_single_repeated_word_at_a_cut_is_kept() -> None:
    # "had had" is English; one repeated word is not evidence of a doubled boundary.
    joined = join_transcripts(["by then she had", "had enough of it"])
    assert joined == "by then she had had enough of it"


def test_overlap_keeps_the_later_chunk_version_of_the_shared_words() -> None:
    # The earlier chunk's last word was cut off mid-way ("marke"); the later chunk heard it whole.
    texts = ["so in the morning we walked to the marke",
             "we walked to the market, bought bread and went home."]
    assert join_transcripts(texts, overlap_s=2.0) == \
        "so in the morning we walked to the market, bought bread and went home."


def test_overlap_alignment_ignores_case_and_punctuation() -> None:
    texts = ["He paused. Then, quietly, He Said", "then quietly he said: no."]
    joined = join_transcripts(texts, overlap_s=2.0)
    assert joined.lower().split().count("quietly") == 1
    assert joined.endswith("he said: no.")


def test_overlap_without_matching_words_loses_nothing() -> None:
    texts = ["alpha beta gamma delta", "epsilon zeta eta theta"]
    assert join_transcripts(texts, overlap_s=2.0) == "alpha beta gamma delta epsilon zeta eta theta"


def test_overlap_dedupes_across_an_empty_chunk() -> None:
    texts = ["one two three four five", "", "four five six seven"]
    assert join_transcripts(texts, overlap_s=1.0).split() == \
        ["one", "two", "three", "four", "five", "six", "seven"]


@settings(max_examples=200, deadline=None)
@given(n_words=st.integers(10, 300), n_chunks=st.integers(1, 8),
       overlap_words=st.integers(2, 8), seed=st.integers(0, 2**32 - 1))
def test_property_overlapping_chunks_join_back_to_the_original(
        n_words: int, n_chunks: int, overlap_words: int, seed: int) -> None:
    """Split a transcript into chunks that repeat `overlap_words` words of their predecessor
    (what an overlapped cut produces): the join gives every word exactly once, in order."""
    rng = np.random.default_rng(seed)
    words = list(rng.choice(VOCABULARY, size=n_words, replace=False))
    cuts = sorted(set(rng.integers(overlap_words + 1, n_words, size=n_chunks - 1).tolist()))
    bounds = [0, *cuts, n_words]
    texts = [" ".join(words[max(0, a - overlap_words) if i else 0:b])
             for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]
    assert join_transcripts(texts, overlap_s=overlap_words / 2.5).split() == words


@settings(max_examples=200, deadline=None)
@given(n_words=st.integers(1, 300), n_chunks=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_property_tiled_chunks_join_back_to_the_original(n_words: int, n_chunks: int,
                                                         seed: int) -> None:
    rng = np.random.default_rng(seed)
    words = list(rng.choice(VOCABULARY, size=n_words, replace=False))
    cuts = sorted(set(rng.integers(0, n_words + 1, size=n_chunks - 1).tolist()))
    bounds = [0, *cuts, n_words]
    texts = [" ".join(words[a:b]) for a, b in zip(bounds, bounds[1:])]
    assert join_transcripts(texts).split() == words


def test_kept_word_ranges_say_which_words_of_each_chunk_survive() -> None:
    assert kept_word_ranges(["a b c d", "c d e f", "", "e f g"], overlap_s=1.0) == \
        [(0, 2), (0, 2), (0, 0), (0, 3)]


def test_dedupe_gives_shared_words_to_the_later_chunk() -> None:
    # The later chunk heard the shared words whole; its audio is where the segments time them.
    texts = ["a b c d", "c d e f", "g h"]
    assert dedupe_chunk_texts(texts, overlap_s=1.0) == ["a b", "c d e f", "g h"]


# --- timing -----------------------------------------------------------------------------------

def bursts(spans_s: list[tuple[float, float]], duration_s: float, seed: int = 1) -> np.ndarray:
    """Noise at speech level inside each (start, end), room noise elsewhere."""
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal(round(duration_s * RATE)).astype(np.float32) * 3e-4
    for start, end in spans_s:
        a, b = round(start * RATE), round(end * RATE)
        audio[a:b] = rng.standard_normal(b - a).astype(np.float32) * 0.1
    return audio


def write_chunk(tmp_path: Path, audio: np.ndarray, index: int = 0, start_s: float = 0.0) -> Chunk:
    path = tmp_path / f"chunk{index}.wav"
    sf.write(path, audio, RATE, subtype="PCM_16")
    return Chunk(index=index, start_s=start_s, end_s=start_s + len(audio) / RATE, path=path)


SENTENCES = ["The first sentence has a handful of words in it.",
             "A second one follows after a clear pause.",
             "And the third closes the little paragraph nicely."]
SPANS = [(0.6, 3.4), (4.5, 7.0), (8.3, 11.0)]  # when each sentence is "spoken"


def test_segments_start_where_the_speech_after_each_pause_starts(tmp_path: Path) -> None:
    audio = bursts(SPANS, 12.0)
    chunk = write_chunk(tmp_path, audio)
    segments = chunk_segments(chunk, " ".join(SENTENCES), audio, RATE)
    assert [s.text for s in segments] == SENTENCES
    for segment, (start, end) in zip(segments, SPANS):
        assert segment.start_s == pytest.approx(start, abs=0.1)
    assert segments[-1].end_s == pytest.approx(SPANS[-1][1], abs=0.1)


def test_captions_leave_the_screen_when_their_speech_ends_not_when_the_next_starts(tmp_path: Path) -> None:
    audio = bursts(SPANS, 12.0)
    segments = chunk_segments(write_chunk(tmp_path, audio), " ".join(SENTENCES), audio, RATE)
    assert [s.end_s for s in segments] == pytest.approx([end for _, end in SPANS], abs=0.1)


def test_a_pause_the_transcript_did_not_punctuate_still_starts_a_caption(tmp_path: Path) -> None:
    audio = bursts([(0.5, 2.5), (3.6, 5.6)], 6.0)
    text = "one two three four five six seven eight nine ten"
    segments = chunk_segments(write_chunk(tmp_path, audio), text, audio, RATE)
    assert [s.text for s in segments] == ["one two three four five", "six seven eight nine ten"]
    assert [s.start_s for s in segments] == pytest.approx([0.5, 3.6], abs=0.1)


def test_a_pause_goes_to_a_nearby_comma_rather_than_the_proportional_word(tmp_path: Path) -> None:
    # By length alone the pause would fall before "epsilon"; the comma two words on is the
    # likelier place, and the caption after the pause must start with "zeta".
    audio = bursts([(0.5, 2.1), (3.2, 5.7)], 6.0)
    text = "alpha beta gamma delta epsilon, zeta eta theta iota kappa lambda."
    segments = chunk_segments(write_chunk(tmp_path, audio), text, audio, RATE)
    assert [s.text for s in segments] == ["alpha beta gamma delta epsilon,",
                                          "zeta eta theta iota kappa lambda."]
    assert [s.start_s for s in segments] == pytest.approx([0.5, 3.2], abs=0.1)


def test_segment_times_are_offset_by_the_chunk_start_and_stay_in_order(tmp_path: Path) -> None:
    first = write_chunk(tmp_path, bursts(SPANS, 12.0), 0, 0.0)
    second = write_chunk(tmp_path, bursts(SPANS, 12.0, seed=2), 1, 12.0)
    segments = build_segments([first, second], [" ".join(SENTENCES)] * 2)
    assert len(segments) == 6
    assert [s.chunk_index for s in segments] == [0, 0, 0, 1, 1, 1]
    assert segments[3].start_s == pytest.approx(12.0 + SPANS[0][0], abs=0.1)
    starts = [s.start_s for s in segments]
    assert starts == sorted(starts)
    assert all(s.start_s <= s.end_s for s in segments)


def test_build_segments_uses_the_deduplicated_texts(tmp_path: Path) -> None:
    first = write_chunk(tmp_path, bursts([(0.5, 4.0)], 5.0), 0, 0.0)
    second = write_chunk(tmp_path, bursts([(0.5, 4.0)], 5.0, seed=3), 1, 4.0)
    segments = build_segments([first, second], ["one two three four five", "four five six seven"],
                              overlap_s=1.0)
    assert " ".join(s.text for s in segments).split() == \
        ["one", "two", "three", "four", "five", "six", "seven"]


def test_overlap_words_are_timed_by_the_later_chunk_and_cues_never_cross(tmp_path: Path) -> None:
    # chunk 0 holds 0-10 s; chunk 1 starts 2.5 s before that ends and hears "twelve thirteen"
    # again, a little earlier than chunk 0's estimate puts them (7.9 s)
    first = write_chunk(tmp_path, bursts([(0.5, 4.0), (4.6, 9.8)], 10.0), 0, 0.0)
    second = write_chunk(tmp_path, bursts([(0.0, 1.8), (2.6, 5.0)], 5.5, seed=4), 1, 7.5)
    texts = ["One two three four five six. Seven eight nine ten eleven twelve thirteen",
             "twelve thirteen. Fourteen fifteen sixteen seventeen."]
    segments = build_segments([first, second], texts, overlap_s=2.0)
    # a caption may run across the cut: "twelve thirteen." are chunk 1's, timed by its audio
    assert [s.text for s in segments] == ["One two three four five six.",
                                          "Seven eight nine ten eleven twelve thirteen.",
                                          "Fourteen fifteen sixteen seventeen."]
    assert [s.start_s for s in segments] == pytest.approx([0.5, 4.6, 10.1], abs=0.1)
    assert segments[1].end_s == pytest.approx(7.5 + 1.8, abs=0.1)  # where chunk 1 hears them end
    assert all(a.end_s <= b.start_s for a, b in zip(segments, segments[1:]))


def test_long_sentences_are_split_into_captions_of_two_lines_at_most(tmp_path: Path) -> None:
    audio = bursts([(0.2, 19.8)], 20.0)
    text = ", ".join(f"clause number {i} of a long run" for i in range(8)) + "."
    segments = chunk_segments(write_chunk(tmp_path, audio), text, audio, RATE)
    assert len(segments) > 1
    assert all(len(s.lines) <= 2 and all(len(line) <= 42 for line in s.lines) for s in segments)
    assert " ".join(s.text for s in segments) == text
    assert all(s.text.endswith(",") or s.text.endswith(".") for s in segments)  # cut at clauses


def test_a_chunk_with_no_text_has_no_segments(tmp_path: Path) -> None:
    audio = bursts([(0.5, 2.0)], 3.0)
    assert chunk_segments(write_chunk(tmp_path, audio), "   ", audio, RATE) == []


def test_text_over_silence_is_spread_over_the_chunk(tmp_path: Path) -> None:
    audio = np.zeros(5 * RATE, dtype=np.float32)
    segments = chunk_segments(write_chunk(tmp_path, audio), "Hello there my friend. Some words follow.",
                              audio, RATE)
    assert [s.text for s in segments] == ["Hello there my friend.", "Some words follow."]
    assert 0.0 <= segments[0].start_s < segments[1].start_s <= 5.0


# --- subtitle files ---------------------------------------------------------------------------

SRT_TIME = r"\d{2}:\d{2}:\d{2},\d{3}"
VTT_TIME = r"\d{2}:\d{2}:\d{2}\.\d{3}"
SEGMENTS = [Segment(0, 0.52, 4.94, "Printing, in the only sense,"),
            Segment(0, 4.94, 11.16, "differs from most."),
            Segment(3, 3725.5, 3729.9996, "An hour later.")]


def test_srt_blocks_are_numbered_timed_and_separated_by_blank_lines() -> None:
    srt = render_srt(SEGMENTS)
    blocks = srt.strip("\n").split("\n\n")
    assert len(blocks) == 3
    for number, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        assert lines[0] == str(number)
        assert re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", lines[1])
    assert blocks[0].split("\n")[1:] == ["00:00:00,520 --> 00:00:04,940", "Printing, in the only sense,"]
    # hours, and a rounding that carries into the next second
    assert blocks[2].split("\n")[1] == "01:02:05,500 --> 01:02:10,000"


def test_vtt_has_its_header_and_dot_milliseconds() -> None:
    vtt = render_vtt(SEGMENTS)
    assert vtt.startswith("WEBVTT\n\n")
    cues = vtt.removeprefix("WEBVTT\n\n").strip("\n").split("\n\n")
    assert len(cues) == 3
    assert cues[1] == "00:00:04.940 --> 00:00:11.160\ndiffers from most."
    assert all(re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", cue.split("\n")[0]) for cue in cues)


def test_no_segments_give_valid_empty_files() -> None:
    assert render_srt([]) == ""
    assert render_vtt([]) == "WEBVTT\n\n"


def test_vtt_escapes_markup_characters_and_srt_keeps_them() -> None:
    segment = Segment(0, 0.0, 2.0, "Q&A: x < y --> z")
    assert "Q&amp;A: x &lt; y --&gt; z" in render_vtt([segment])
    assert "Q&A: x < y --> z" in render_srt([segment])


def test_captions_made_elsewhere_are_wrapped_into_short_lines_without_blank_lines() -> None:
    # a feed's own transcript (tasks/podcast/transcripts.py): no lines chosen by the cue builder
    words = "Sixteen words make a caption far too wide for one line on a small screen, so wrap it."
    for rendered in (render_vtt([Segment(0, 0.0, 5.0, words)]), render_srt([Segment(0, 0.0, 5.0, words)])):
        cue = rendered.rstrip("\n").split("\n\n")[-1].split("\n")
        text_lines = cue[cue.index(next(line for line in cue if "-->" in line)) + 1:]
        assert len(text_lines) == 3
        assert all(0 < len(line) <= CAPTION_LINE_CHARS for line in text_lines)
        assert " ".join(text_lines) == words


def test_an_overlap_heard_with_other_spellings_is_kept_once() -> None:
    """The cause of test_overlapping_chunks' 5.01% (7 words doubled): the two chunks wrote
    the overlap's words differently, so no two in a row matched and nothing was dropped."""
    from audiobatch.tasks.transcription.assemble import join_transcripts

    earlier = "printed with movable type, via four said Guttenberg Bible."
    later = "type the aforesaid Gutenberg Bible is printed in a fine style"
    joined = join_transcripts([earlier, later], overlap_s=3.0)
    assert joined.lower().count("bible") == 1 and joined.endswith("Bible is printed in a fine style")
