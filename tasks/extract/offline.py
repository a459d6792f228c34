"""The offline method: chapters, show notes and sponsor spots from the transcript alone.

No request, no model download, no network: sentences with times (sentences.py), topic changes
by lexical cohesion (topics.py), titles from key phrases and summaries by extraction
(phrases.py), sponsor reads by their wording (sponsors.py). The first chapter starts at 0 and
the last ends with the item; a chapter never starts inside a sponsor read (after it instead),
and reads are left out of titles, summaries and keywords.
Measured (benchmarks/chapters.py, docs/chapters.md): boundary accuracy and the time per hour.
"""
from __future__ import annotations

from audiobatch.tasks.captions.segments import Segment
from audiobatch.tasks.extract.notes import (MAX_CHAPTER_SUMMARY_CHARS, MAX_SUMMARY_CHARS,
                                            Chapter, Notes, SponsorSpot, clipped)
from audiobatch.tasks.extract.phrases import central_sentence, chapter_titles, keywords, stopwords
from audiobatch.tasks.extract.sentences import timed_sentences
from audiobatch.tasks.extract.sponsors import sponsor_spots
from audiobatch.tasks.extract.topics import content_words, snapped_start, topic_starts

KEYWORDS_OFFLINE = 10


def offline_notes(segments: list[Segment], duration_s: float, language: str | None, *,
                  method: str = "offline", problems: tuple[str, ...] = ()) -> Notes:
    """The item's notes from its segments (times on the recording's timeline)."""
    sentences = timed_sentences(segments, language)
    if not sentences:
        return Notes((), "", (), (), method, None, problems)
    stop = stopwords(language)
    spots = sponsor_spots(sentences)
    in_reads = {i for first, last, _ in spots for i in range(first, last + 1)}
    # a read's words belong to no topic: left out, the change is found around the read
    words = [[] if i in in_reads else content_words(s.text, stop) for i, s in enumerate(sentences)]
    starts = topic_starts(sentences, words, duration_s)
    bounds = [0, *sorted({_after_reads(start, spots, len(sentences)) for start in starts}), len(sentences)]
    spans = list(zip(bounds, bounds[1:]))
    texts = [[sentences[i].text for i in range(first, end) if i not in in_reads] or
             [s.text for s in sentences[first:end]] for first, end in spans]
    titles = chapter_titles([" ".join(t) for t in texts], language)
    chapters = [Chapter(0.0 if number == 0 else snapped_start(sentences, first), duration_s,
                        title, _summary(said, stop))
                for number, ((first, _), said, title) in enumerate(zip(spans, texts, titles))]
    chapters = [Chapter(c.start_s, nxt.start_s, c.title, c.summary)
                for c, nxt in zip(chapters, chapters[1:])] + chapters[-1:]
    said = " ".join(s.text for i, s in enumerate(sentences) if i not in in_reads)
    return Notes(tuple(chapters), _show_summary(chapters), tuple(keywords(said, language, KEYWORDS_OFFLINE)),
                 tuple(spot for _, _, spot in spots), method, None, problems)


def _after_reads(start: int, spots: list[tuple[int, int, SponsorSpot]], count: int) -> int:
    """A chapter starting in a sponsor read starts after it: the read interrupts the topic
    before it (and its words differ from both sides, so a topic change is often found at its
    start); the next topic begins where the read ends."""
    for first, last, _ in spots:
        if first <= start <= last and last + 1 < count:
            return last + 1
    return start


def _summary(texts: list[str], stop: frozenset[str]) -> str:
    index = central_sentence(texts, stop)
    return clipped(texts[index], MAX_CHAPTER_SUMMARY_CHARS) if index is not None else ""


def _show_summary(chapters: list[Chapter]) -> str:
    """The chapters' summaries in order, as one paragraph within MAX_SUMMARY_CHARS."""
    kept: list[str] = []
    for chapter in chapters:
        if chapter.summary and chapter.summary not in kept and \
                len(" ".join([*kept, chapter.summary])) <= MAX_SUMMARY_CHARS:
            kept.append(chapter.summary)
    return " ".join(kept)
