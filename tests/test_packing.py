"""Short alignment windows encoded together (localmodel/packing.py, issue 24 item 1): QA of a
remote model aligns every reply, and a run of short clips paid a 15 s encoder pass per clip.
Real speech, the real embedded Whisper; each test has engines of its own (nothing remembered
from other tests)."""
from __future__ import annotations

import asyncio

import numpy as np

from audiobatch.localmodel.align import WhisperAligner
from audiobatch.localmodel.engines import Engines
from audiobatch.tasks.audio.codecs import decode
from audiobatch.tasks.captions.words import Word, word_pieces
from audiobatch.tasks.transcription.qa import LOW_FIT, fit
from tests.helpers.data import SPEECH
from tests.helpers.pauses import english_references

RATE = 16_000
SHORT = ["pocketsphinx__goforward.wav", "pocketsphinx__cards_005.wav", "deepspeech__LDC93S1.wav",
         "speech_recognition__english.wav", "pocketsphinx__sense_and_sensibility_01_austen_64kb-0880.wav",
         "pocketsphinx__cards_002.wav"]


def _clips() -> tuple[list[np.ndarray], list[str]]:
    references = english_references()
    return [decode(SPEECH / name, RATE) for name in SHORT], [references[name] for name in SHORT]


async def _together(aligner: WhisperAligner, clips: list[np.ndarray], texts: list[str]) -> list[list[Word]]:
    return list(await asyncio.gather(*[aligner.align(samples, word_pieces(text), "en")
                                       for samples, text in zip(clips, texts)]))


async def test_short_windows_waiting_together_share_encoder_passes_and_keep_their_words() -> None:
    clips, texts = _clips()
    packed_engines, alone_engines = Engines(), Engines()
    packed = await _together(WhisperAligner(packed_engines), clips, texts)
    assert packed_engines.packer.passes <= len(clips) // 2  # 6 clips of 1.6-3.5 s: 2 packs
    alone_aligner = WhisperAligner(alone_engines)
    alone = [await alone_aligner.align(samples, word_pieces(text), "en")
             for samples, text in zip(clips, texts)]
    assert alone_engines.packer.passes == len(clips)
    for name, mine, own in zip(SHORT, packed, alone):
        assert fit(mine) >= LOW_FIT and fit(own) >= LOW_FIT, name  # true texts stay true
        assert abs(mine[0].start_s - own[0].start_s) <= 0.15, name  # the words where they were
        assert all(0.0 <= w.start_s <= w.end_s <= len(clips[SHORT.index(name)]) / RATE for w in mine)


async def test_a_reask_of_the_same_chunk_is_aligned_without_another_encoder_pass() -> None:
    clips, texts = _clips()
    engines = Engines()
    aligner = WhisperAligner(engines)
    await _together(aligner, clips, texts)
    passes = engines.packer.passes
    again = await _together(aligner, clips, [f"words of request {k}" for k in range(len(clips))])
    assert engines.packer.passes == passes
    assert all(fit(words) < LOW_FIT for words in again)  # and a wrong text is still told


async def test_a_neighbours_text_is_not_vouched_for_by_the_neighbours_audio() -> None:
    """Hostile: a reply that holds the text of another chunk waiting in the same pack (a model
    that answers every chunk with one recording's words). Each window's decoder sees only its
    own frames: the neighbour's audio cannot vouch for it."""
    clips, texts = _clips()
    engines = Engines()
    shifted = texts[1:] + texts[:1]  # each clip given the next one's words, all waiting together
    words = await _together(WhisperAligner(engines), clips, shifted)
    assert engines.packer.passes <= len(clips) // 2
    assert all(fit(w) < LOW_FIT for w in words), [round(fit(w), 2) for w in words]
