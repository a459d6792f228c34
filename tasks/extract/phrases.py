"""Titles, summaries and keywords taken from the transcript's own words (offline).

Key phrases are YAKE's (Campos et al., 2020: statistics of each phrase within the text itself,
no corpus and no model; the `yake` package ships its stop-word lists, 34 languages). A title is
two of a chapter's phrases, chosen by how much their words say about this chapter and not the
others (`chapter_titles`); a summary is extractive: the sentence closest to the whole (cosine
of content words against the chapter's), so every word of it was said. Pure functions; YAKE's
extractors and stop words are kept per language.
"""
from __future__ import annotations

import functools
import math
from collections import Counter

import yake

from audiobatch.tasks.extract.notes import MAX_KEYWORD_CHARS, MAX_TITLE_CHARS, clipped, xml_text
from audiobatch.tasks.extract.topics import content_words

SUMMARY_MIN_WORDS = 6  # a shorter sentence rarely says what a chapter is about
SUMMARY_MAX_WORDS = 60
TITLE_CANDIDATES = 25  # YAKE phrases a title is chosen from
YAKE_MAX_CHARS = 24_000  # about 25 minutes of speech
STRETCH_CHARS = 2_000


@functools.lru_cache(maxsize=16)
def _extractor(language: str, words: int, top: int) -> yake.KeywordExtractor:
    return yake.KeywordExtractor(lan=language, n=words, top=top, dedup_lim=0.7)


@functools.lru_cache(maxsize=16)
def stopwords(language: str | None) -> frozenset[str]:
    """YAKE's stop words for the language (its language-neutral list when it has none)."""
    return frozenset(_extractor(_code(language), 3, 5).stopword_set)


def _code(language: str | None) -> str:
    return (language or "en").split("-")[0].lower()


def key_phrases(text: str, language: str | None, *, top: int = 5, words: int = 3) -> list[str]:
    """The text's key phrases, best first, as they were written (from at most
    YAKE_MAX_CHARS of it: evenly spaced stretches of a longer text)."""
    if not text.strip():
        return []
    found = _extractor(_code(language), words, top).extract_keywords(_sampled(text))
    return [xml_text(phrase) for phrase, _ in found if xml_text(phrase)]


def _sampled(text: str) -> str:
    """`text`, or YAKE_MAX_CHARS of it in STRETCH_CHARS stretches spread over all of it: YAKE's
    time grows faster than the text (16 s for 130,000 characters of abbreviations)."""
    if len(text) <= YAKE_MAX_CHARS:
        return text
    count = YAKE_MAX_CHARS // STRETCH_CHARS
    step = (len(text) - STRETCH_CHARS) / (count - 1)
    return " ".join(text[round(i * step):round(i * step) + STRETCH_CHARS] for i in range(count))


def title_case(phrase: str) -> str:
    """Each word capitalised, except words already holding a capital (names, acronyms)."""
    return " ".join(w if any(c.isupper() for c in w) else w[:1].upper() + w[1:] for w in phrase.split())


def chapter_titles(texts: list[str], language: str | None) -> list[str]:
    """A title per chapter: its two best key phrases (sharing no word), where a phrase is as
    good as its words are frequent in this chapter and rare in the others (tf-idf over the
    chapters). YAKE proposes the phrases; its own ranking favours a text's first words, which
    in speech are as often a greeting as the topic."""
    stop = stopwords(language)
    bags = [Counter(content_words(text, stop)) for text in texts]
    spread = Counter(word for bag in bags for word in bag)
    titles: list[str] = []
    for text, bag in zip(texts, bags):
        def weight(phrase: str) -> float:
            words = content_words(phrase, stop)
            return sum(bag[w] * math.log(1 + len(texts) / max(1, spread[w])) for w in words) / \
                math.sqrt(len(words)) if words else 0.0

        chosen: list[str] = []
        used: set[str] = set()
        for phrase in sorted(key_phrases(text, language, top=TITLE_CANDIDATES), key=weight, reverse=True):
            words = set(content_words(phrase, stop))
            if words and not words & used:
                chosen.append(title_case(phrase))
                used |= words
            if len(chosen) == 2:
                break
        title = clipped(" and ".join(chosen), MAX_TITLE_CHARS) or "Untitled"
        titles.append(title if title not in titles else f"{title} ({len(titles) + 1})")
    return titles


def keywords(text: str, language: str | None, count: int) -> list[str]:
    """Up to `count` key words and two-word phrases of the whole text, lower case, distinct."""
    found: list[str] = []
    for phrase in key_phrases(text, language, top=count * 2, words=2):
        phrase = phrase.lower()[:MAX_KEYWORD_CHARS]
        if phrase not in found:
            found.append(phrase)
    return found[:count]


def central_sentence(texts: list[str], stop: frozenset[str]) -> int | None:
    """Index of the sentence whose content words are closest to the whole passage's."""
    bags = [Counter(content_words(t, stop)) for t in texts]
    whole: Counter = Counter()
    for bag in bags:
        whole.update(bag)
    best, best_score = None, -1.0
    for index, (text, bag) in enumerate(zip(texts, bags)):
        size = len(text.split())
        if not bag or not SUMMARY_MIN_WORDS <= size <= SUMMARY_MAX_WORDS:
            continue
        score = _cosine(bag, whole)
        if score > best_score:
            best, best_score = index, score
    return best


def _cosine(a: Counter, b: Counter) -> float:
    dot = sum(a[w] * b[w] for w in a.keys() & b.keys())
    norm = math.sqrt(sum(v * v for v in a.values()) * sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0
