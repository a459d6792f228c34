"""Cut points by voice activity (tasks/audio/vad.py + tasks/audio/pauses.py): real LJ Speech clips over a
music bed, where levels alone find no pause, and the detector's spans against known clip edges."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiobatch.tasks.audio.codecs import decode
from audiobatch.tasks.audio.prepare import prepare_chunks
from audiobatch.tasks.audio.vad import speech_spans
from tests.helpers.data import SPEECH
from tests.helpers.e2e import Concatenation, concatenate_clips

RATE = 16_000
CLIPS = [SPEECH / f"coqui-tts__LJ001-000{i}.wav" for i in (1, 3, 4, 5, 6, 7)]
GAP_S = 1.2


def music_bed(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A chord progression with a bass line and hi-hat noise, never silent: what a podcast
    plays under its voices. Notes change every 0.4 s with soft attacks."""
    t = np.arange(round(seconds * RATE)) / RATE
    chords = [(220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6), (196.0, 246.9, 311.1)]
    note = (t // 0.4).astype(int)
    phase_in_note = (t % 0.4) / 0.4
    envelope = 0.6 + 0.4 * np.exp(-4 * phase_in_note)
    bed = np.zeros_like(t)
    for voice in range(3):
        freqs = np.array([chords[n % 4][voice] for n in range(note.max() + 1)])[note]
        for harmonic in (1, 2, 3):
            bed += np.sin(2 * np.pi * freqs * harmonic * t) / (harmonic * 3)
    bass = np.array([chords[n // 2 % 4][0] / 2 for n in range(note.max() + 1)])[note]
    bed += 0.8 * np.sin(2 * np.pi * bass * t)
    bed = bed * envelope + 0.15 * rng.standard_normal(t.size) * (phase_in_note < 0.1)
    return (bed / np.abs(bed).max()).astype(np.float32)


@pytest.fixture(scope="module")
def speech_over_music(tmp_path_factory: pytest.TempPathFactory) -> tuple[Concatenation, Path]:
    folder = tmp_path_factory.mktemp("vad")
    clean = concatenate_clips(CLIPS, [GAP_S] * (len(CLIPS) - 1), folder / "clean.wav")
    speech = decode(clean.path, RATE)
    music = music_bed(len(speech) / RATE, np.random.default_rng(3))
    speech_rms = np.sqrt(np.mean(speech[np.abs(speech) > 0.01] ** 2))
    mixed = speech + music * speech_rms * 10 ** (-10 / 20) / np.sqrt(np.mean(music ** 2))  # -10 dB bed
    path = folder / "mixed.wav"
    sf.write(path, mixed / max(1.0, np.abs(mixed).max()), RATE, subtype="PCM_16")
    return clean, path


def cuts_in_speech(chunk_ends: list[float], clean: Concatenation) -> list[float]:
    """The cuts where the voice (the clean track, without the music) is sounding within
    40 ms either side: those would cut a word."""
    voice = decode(clean.path, RATE)
    loud = 20 * np.log10(np.percentile(np.abs(voice), 99))
    inside = []
    for cut in chunk_ends:
        around = voice[round((cut - 0.04) * RATE): round((cut + 0.04) * RATE)]
        if 10 * np.log10(np.mean(around.astype(np.float64) ** 2) + 1e-12) > loud - 40:
            inside.append(round(cut, 2))
    return inside


def test_cuts_fall_in_pauses_under_a_music_bed(speech_over_music: tuple[Concatenation, Path],
                                               tmp_path: Path) -> None:
    clean, mixed = speech_over_music
    by_vad = prepare_chunks(mixed, tmp_path / "vad", max_chunk_s=14.0, label="mixed",
                            search_window_s=7.0)
    by_level = prepare_chunks(mixed, tmp_path / "level", max_chunk_s=14.0, label="mixed",
                              search_window_s=7.0, vad=False)
    vad_cuts = [c.end_s for c in by_vad.chunks[:-1]]
    level_cuts = [c.end_s for c in by_level.chunks[:-1]]
    print(f"cuts by VAD {vad_cuts} ({[c.cut for c in by_vad.chunks]}), by level {level_cuts}")
    assert len(vad_cuts) >= 3
    assert cuts_in_speech(vad_cuts, clean) == []
    assert {c.cut for c in by_vad.chunks[:-1]} == {"vad"}  # levels found no pause under the music
    assert {c.cut for c in by_level.chunks[:-1]} == {"quietest"}  # levels alone hear no pause


def test_speech_spans_start_where_the_clips_start(speech_over_music: tuple[Concatenation, Path]) -> None:
    clean, mixed = speech_over_music
    spans = speech_spans(decode(mixed, RATE), min_gap_s=0.5)
    starts = [start for start, _ in spans]
    assert len(spans) == len(CLIPS)
    # LJ clips begin with 0.05-0.25 s of room tone before the first word
    for true_start, found in zip(clean.starts_s, starts):
        assert true_start - 0.1 <= found <= true_start + 0.4


def test_the_same_chunk_is_heard_once_and_a_changed_one_afresh() -> None:
    """The transcript checks and the aligner both ask about a chunk: Silero runs once for it,
    with the same answer; a chunk that differs in one sample is heard again."""
    from audiobatch.tasks.audio import vad

    samples = decode(SPEECH / "openai-whisper__jfk.flac", RATE)
    first = speech_spans(samples)
    hits = vad._heard.hits
    assert speech_spans(samples.copy()) == first and vad._heard.hits == hits + 1
    changed = samples.copy()
    changed[len(changed) // 2] += 0.25
    speech_spans(changed)
    assert vad._heard.hits == hits + 1
