"""Pronunciation mends for the embedded voice (localmodel/pronounce.py): the phoneme rules,
and what a listener (the embedded Whisper) hears with and without them."""
from __future__ import annotations

import pytest

from audiobatch.localmodel.engines import OUTPUT_SAMPLE_RATE, WHISPER_SAMPLE_RATE, shared_engines
from audiobatch.localmodel.pronounce import clearer_phonemes, clearer_word
from audiobatch.tasks.audio import codecs
from tests.helpers.data import TEXTS
from tests.helpers.e2e import normalise


@pytest.mark.parametrize("word, mended", [
    ("ɪz", "ˈɪz"), ("ɪz,", "ˈɪz,"), ("ɪz?", "ˈɪz?"),
    ("fˈɔːɹtiːn", "fˈɔːɹtˌiːn"), ("ˈeɪtiːnθ", "ˈeɪtˌiːnθ"), ("nˈaɪntiːn,", "nˈaɪntˌiːn,"),
    ("sˈɪkstiːnθs", "sˈɪkstˌiːnθs"), ("fˈɪftiːnz.", "fˈɪftˌiːnz."),
])
def test_is_and_teen_numbers_get_their_stress(word: str, mended: str) -> None:
    assert clearer_word(word) == mended


@pytest.mark.parametrize("word", [
    "ɪn", "ɪnðə", "ðɪs", "hɪz", "pɹˈoʊtiːn", "kæntˈiːn", "sˈɛvəntˌiːn", "fˈɔːɹtˌiːn", "ˈɪz", "ɪzɐ",
])
def test_every_other_word_is_left_as_espeak_wrote_it(word: str) -> None:
    assert clearer_word(word) == word


def test_phoneme_lists_keep_their_spacing_and_punctuation() -> None:
    phonemes = list("ɪɾ ɪz fˈɔːɹtiːn sˈɛvənti.")
    assert "".join(clearer_phonemes(phonemes)) == "ɪɾ ˈɪz fˈɔːɹtˌiːn sˈɛvənti."


def hear(text: str) -> list[str]:
    """Speak the text, then transcribe it as the embedded model hears audio input (a wav
    decoded to 16 kHz)."""
    engines = shared_engines()
    wav = codecs.encode(engines.synthesize_blocking(text), OUTPUT_SAMPLE_RATE, "wav")
    return normalise(engines.transcribe_blocking(codecs.decode(wav, WHISPER_SAMPLE_RATE))).split()


# Sentences of ../shared/data/texts/ljspeech_LJ001.txt that Whisper misheard before the mends
# (what it heard then is in the comment), and words it must now hear.
MISHEARD = [
    ("his letter is admirably clear", "letter is admirably"),  # "his letters admirably"
    ("all through the sixteenth and seventeenth centuries", "into the 18th"),  # "into the 8th"
    ('After his death in the "fourteen eighties,"', "at least by 1490"),  # "by 4090"
]


def lj001_sentence(containing: str) -> str:
    text = (TEXTS / "ljspeech_LJ001.txt").read_text(encoding="utf-8")
    start = text.rindex(". ", 0, text.index(containing)) + 2
    return text[start:text.index(".", text.index(containing)) + 1]


@pytest.mark.parametrize("containing, heard", MISHEARD)
def test_the_voice_says_is_and_years_so_that_they_are_heard(containing: str, heard: str) -> None:
    assert heard in " ".join(hear(lj001_sentence(containing)))
