"""Narration audio on real speech: clean joins, configured pauses, loudness, pitch-preserving speed."""
from __future__ import annotations

import io
import math
import time
from pathlib import Path

import av
import numpy as np
import pyloudnorm
import pytest

from audiobatch.tasks.audio.codecs import decode, encode
from audiobatch.tasks.audio.stitch import finish_narration, loudness_normalise, speed_up, stitch, time_stretch
from audiobatch.tasks.errors import InputError
from tests.helpers.data import SPEECH

SR = 24_000
AUDIO = SPEECH


def lj_clip(n: int) -> np.ndarray:
    return decode(AUDIO / f"coqui-tts__LJ001-000{n}.wav", SR)


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    return [lj_clip(n) for n in (1, 2, 3, 4)]


@pytest.fixture(scope="module")
def long_speech() -> np.ndarray:
    return decode(AUDIO / "derived__LJ001-0009_to_0032_concat.wav", SR)  # 171 s


def lufs(samples: np.ndarray) -> float:
    return pyloudnorm.Meter(SR).integrated_loudness(samples.astype(np.float64))


def peak_dbfs(samples: np.ndarray) -> float:
    return 20 * math.log10(float(np.abs(samples).max()))


def silent_runs(samples: np.ndarray, min_s: float = 0.05) -> list[tuple[int, int]]:
    """(start, end) of every run of exact zeros at least `min_s` long: the inserted pauses."""
    zero = np.concatenate([[False], samples == 0, [False]]).astype(np.int8)
    starts, ends = np.flatnonzero(np.diff(zero) == 1), np.flatnonzero(np.diff(zero) == -1)
    return [(s, e) for s, e in zip(starts, ends) if e - s >= min_s * SR]


JOIN_WINDOW = int(0.002 * SR)  # a click lives in the few samples where a part meets the pause


def worst_join_step(samples: np.ndarray) -> float:
    """Largest sample-to-sample step in the 2 ms either side of each pause."""
    runs = silent_runs(samples)
    steps = [np.abs(np.diff(samples[max(0, s - JOIN_WINDOW):s + 1])).max() for s, _ in runs]
    steps += [np.abs(np.diff(samples[e - 1:e + JOIN_WINDOW])).max() for _, e in runs]
    return float(max(steps))


def typical_speech_step(speech: np.ndarray) -> float:
    """Median over voiced 2 ms windows of the largest step inside the window."""
    n = (len(speech) - 1) // JOIN_WINDOW * JOIN_WINDOW
    steps = np.abs(np.diff(speech))[:n].reshape(-1, JOIN_WINDOW).max(axis=1)
    rms = np.sqrt((speech[:n].reshape(-1, JOIN_WINDOW) ** 2).mean(axis=1))
    return float(np.median(steps[rms > 10 ** (-35 / 20)]))


def cut_mid_word(speech: np.ndarray, starts_s: list[float], length_s: float) -> list[np.ndarray]:
    """Parts that start and stop on a loud sample (|x| > 0.2): hard edges that would click."""
    def loud_sample_after(seconds: float) -> int:
        start = int(seconds * SR)
        return start + int(np.flatnonzero(np.abs(speech[start:start + SR]) > 0.2)[0])

    return [speech[loud_sample_after(s):loud_sample_after(s + length_s) + 1].copy() for s in starts_s]


# --- joins ------------------------------------------------------------------------------

def test_joins_have_no_click_louder_than_the_speech(long_speech: np.ndarray) -> None:
    parts = cut_mid_word(long_speech, [10.0, 30.0, 50.0, 70.0], 8.0)
    assert all(abs(p[0]) > 0.1 and abs(p[-1]) > 0.1 for p in parts), "edges should be mid-waveform"
    typical = typical_speech_step(np.concatenate(parts))  # ~0.05 for this reader

    joined = stitch(parts, SR)
    assert len(silent_runs(joined)) == 3
    assert worst_join_step(joined) <= typical

    # The measure can fail: butting the same parts against silence without fades clicks.
    pause = np.zeros(int(0.35 * SR), dtype=np.float32)
    naive = np.concatenate([parts[0], pause, parts[1], pause, parts[2], pause, parts[3]])
    assert worst_join_step(naive) > 4 * typical
    assert worst_join_step(stitch(parts, SR, fade_ms=0)) > 4 * typical


@pytest.mark.parametrize("pause_s", [0.35, 0.8])
def test_pause_between_parts_is_as_configured(clips: list[np.ndarray], pause_s: float) -> None:
    joined = stitch(clips, SR, pause_s=pause_s)
    pauses = [(e - s) / SR for s, e in silent_runs(joined)]
    assert len(pauses) == len(clips) - 1
    assert all(abs(p - pause_s) < 0.003 for p in pauses), pauses


def test_leading_and_trailing_silence_of_each_part_is_trimmed(clips: list[np.ndarray]) -> None:
    rng = np.random.default_rng(7)
    room_noise = [(rng.standard_normal(SR) * 10 ** (-65 / 20)).astype(np.float32) for _ in range(8)]
    padded = [np.concatenate([room_noise[2 * i], clip, room_noise[2 * i + 1]])
              for i, clip in enumerate(clips)]
    speech_s = sum(len(c) for c in clips) / SR
    joined_s = len(stitch(padded, SR, pause_s=0.35)) / SR
    # 4 s of padding added; what is left is the pauses plus a short onset and tail per part
    assert speech_s + 3 * 0.35 <= joined_s + 0.05
    assert joined_s < speech_s + 3 * 0.35 + 4 * 0.2


def test_silent_parts_are_left_out(clips: list[np.ndarray]) -> None:
    joined = stitch([clips[0], np.zeros(SR, dtype=np.float32), clips[1]], SR)
    assert len(silent_runs(joined)) == 1


def test_stitch_rejects_no_parts_non_mono_parts_and_only_silence(clips: list[np.ndarray]) -> None:
    with pytest.raises(InputError, match="no narrated audio"):
        stitch([], SR)
    with pytest.raises(InputError, match="chunk 1: expected mono"):
        stitch([clips[0], np.stack([clips[1], clips[1]])], SR)
    with pytest.raises(InputError, match="all 2 narrated audio chunks are silent"):
        stitch([np.zeros(SR, dtype=np.float32), np.zeros(10, dtype=np.float32)], SR)


# --- loudness ---------------------------------------------------------------------------

@pytest.mark.parametrize("input_gain_db", [-20.0, 0.0, 8.0])
def test_loudness_reaches_target_without_exceeding_the_peak_ceiling(
        clips: list[np.ndarray], input_gain_db: float) -> None:
    joined = stitch(clips, SR) * np.float32(10 ** (input_gain_db / 20))  # +8 dB: clipping input
    levelled = loudness_normalise(joined, SR)
    assert abs(lufs(levelled) - (-16.0)) < 0.5
    assert peak_dbfs(levelled) <= -1.0 + 1e-5


def test_loudness_to_another_target_and_ceiling(clips: list[np.ndarray]) -> None:
    levelled = loudness_normalise(clips[0], SR, target_lufs=-23.0, peak_dbfs=-3.0)
    assert abs(lufs(levelled) - (-23.0)) < 0.5
    assert peak_dbfs(levelled) <= -3.0 + 1e-5


def test_silence_and_very_short_audio_are_not_amplified() -> None:
    silence = np.zeros(SR, dtype=np.float32)
    assert np.array_equal(loudness_normalise(silence, SR), silence)
    blip = np.full(SR // 10, 0.99, dtype=np.float32)  # too short to measure: only the ceiling
    assert peak_dbfs(loudness_normalise(blip, SR)) <= -1.0 + 1e-5


# --- speed ------------------------------------------------------------------------------

@pytest.mark.parametrize("speed", [1.5, 0.25, 4.0, 0.7, 3.0])
def test_time_stretch_duration_is_within_one_percent(clips: list[np.ndarray], speed: float) -> None:
    speech = clips[0]
    stretched = time_stretch(speech, SR, speed)
    assert abs(len(stretched) / (len(speech) / speed) - 1) < 0.01


@pytest.mark.parametrize("speed", [0.25, 4.0])
def test_time_stretch_of_short_audio_has_the_exact_length(clips: list[np.ndarray], speed: float) -> None:
    short = clips[1][:int(0.3 * SR)]
    assert len(time_stretch(short, SR, speed)) == round(len(short) / speed)


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / SR)[spectrum.argmax()])


def autocorrelation_pitch_hz(samples: np.ndarray, low: float = 80, high: float = 400) -> float:
    frame = samples[:4096] - samples[:4096].mean()
    corr = np.correlate(frame, frame, mode="full")[len(frame) - 1:]
    lags = np.arange(int(SR / high), int(SR / low))
    return SR / float(lags[corr[lags].argmax()])


def median_voice_pitch_hz(speech: np.ndarray, low: float = 60.0, high: float = 500.0) -> float:
    """Median autocorrelation pitch over clearly voiced 40 ms frames."""
    n = int(0.04 * SR)
    lags = np.arange(int(SR / high), int(SR / low))
    pitches = []
    for start in range(0, len(speech) - n, n // 2):
        frame = speech[start:start + n] - speech[start:start + n].mean()
        corr = np.correlate(frame, frame, mode="full")[n - 1:]
        lag = lags[corr[lags].argmax()]
        if corr[0] > 0 and corr[lag] / corr[0] > 0.6:  # voiced: strongly periodic
            pitches.append(SR / lag)
    return float(np.median(pitches))


@pytest.mark.parametrize("speed", [0.25, 1.5, 4.0])
def test_time_stretch_keeps_the_pitch_of_a_tone(speed: float) -> None:
    t = np.arange(2 * SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
    stretched = time_stretch(tone, SR, speed)
    middle = stretched[len(stretched) // 4: 3 * len(stretched) // 4]
    assert abs(autocorrelation_pitch_hz(middle) - 220.0) < 220.0 * 0.02
    assert abs(dominant_hz(middle) - 220.0) < 5.0


def test_time_stretch_keeps_the_pitch_of_real_speech(clips: list[np.ndarray]) -> None:
    speech = clips[2]
    original = median_voice_pitch_hz(speech)  # ~213 Hz, the LJ Speech reader
    for speed in (0.25, 0.5, 2.0):
        assert abs(median_voice_pitch_hz(time_stretch(speech, SR, speed)) / original - 1) < 0.08
    # The measure can fail: changing speed by resampling (a tape run fast) raises the voice.
    tape = np.interp(np.arange(0, len(speech), 2.0), np.arange(len(speech)), speech)
    assert median_voice_pitch_hz(tape.astype(np.float32)) / original > 1.7


def test_speed_one_returns_the_input_unchanged(clips: list[np.ndarray]) -> None:
    assert time_stretch(clips[0], SR, 1.0) is clips[0]


@pytest.mark.parametrize("speed", [0.0, 0.2, 4.01, 10.0, -1.0, float("nan")])
def test_out_of_range_speed_is_an_input_error(clips: list[np.ndarray], speed: float) -> None:
    with pytest.raises(InputError, match="outside 0.25-4.0"):
        time_stretch(clips[0], SR, speed)
    with pytest.raises(InputError, match="outside 0.25-4.0"):
        finish_narration(clips, SR, speed=speed)


def quiet_runs(samples: np.ndarray, min_s: float = 0.05) -> list[int]:
    """Lengths (samples) of the runs of at least `min_s` under 1/1000 of full scale: pauses."""
    quiet = np.concatenate([[False], np.abs(samples) < 1e-3, [False]]).astype(np.int8)
    starts, ends = np.flatnonzero(np.diff(quiet) == 1), np.flatnonzero(np.diff(quiet) == -1)
    return [int(e - s) for s, e in zip(starts, ends) if e - s >= min_s * SR]


def test_speeding_up_shortens_the_pauses_more_than_the_speech(clips: list[np.ndarray]) -> None:
    # Whisper hears fast speech worse: at 1.5 the pauses take more of the speed-up than speech
    narration = loudness_normalise(stitch(clips, SR, pause_s=0.5), SR)
    faster, _ = speed_up(narration, SR, 1.5)
    assert len(faster) == round(len(narration) / 1.5)
    paused, paused_faster = sum(quiet_runs(narration)) / SR, sum(quiet_runs(faster)) / SR
    spoken, spoken_faster = len(narration) / SR - paused, len(faster) / SR - paused_faster
    print(f"pauses {paused:.2f} -> {paused_faster:.2f} s, speech {spoken:.2f} -> {spoken_faster:.2f} s")
    assert paused / paused_faster > 2.0
    assert 1.2 < spoken / spoken_faster < 1.45
    # every pause is still there (no two sentences run together), only shorter
    assert len(quiet_runs(faster)) == len(quiet_runs(narration))


def test_speeding_up_what_is_mostly_silence_stretches_it_evenly(clips: list[np.ndarray]) -> None:
    # cutting 20 s of silence to 1/16 would leave less than the asked length: nothing is cut
    # then (which would have meant slowing the speech down), all of it is sped up alike
    word = clips[0][:int(0.5 * SR)]
    audio = np.concatenate([word, np.zeros(20 * SR, np.float32)])
    faster, timeline = speed_up(audio, SR, 4.0)
    assert np.array_equal(faster, time_stretch(audio, SR, 4.0))
    assert timeline.at(20.5) == pytest.approx(20.5 / 4.0)


# --- the whole path -----------------------------------------------------------------------

def test_finish_narration_levels_and_speeds_up_real_speech(clips: list[np.ndarray]) -> None:
    at_normal_speed = finish_narration(clips, SR)
    assert abs(lufs(at_normal_speed) - (-16.0)) < 0.5
    assert peak_dbfs(at_normal_speed) <= -1.0 + 1e-5
    faster = finish_narration(clips, SR, speed=1.25)
    assert abs(len(faster) / (len(at_normal_speed) / 1.25) - 1) < 0.01
    assert peak_dbfs(faster) <= -1.0 + 1e-5


def test_finished_narration_encodes_with_its_title(clips: list[np.ndarray]) -> None:
    narration = finish_narration(clips[:2], SR, speed=1.1)
    mp3 = encode(narration, SR, "mp3", title="Episode 42")
    with av.open(io.BytesIO(mp3)) as container:
        assert container.metadata.get("title") == "Episode 42"
    assert abs(len(decode(mp3, SR)) / len(narration) - 1) < 0.01


def test_three_minutes_of_narration_finish_in_a_few_seconds(long_speech: np.ndarray) -> None:
    parts = np.array_split(long_speech, 4)  # ~171 s in four narrated chunks
    started = time.perf_counter()
    finished = finish_narration(list(parts), SR, speed=1.25)
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, f"{elapsed:.2f} s"
    assert abs(len(finished) / SR - (len(long_speech) / SR + 3 * 0.35) / 1.25) < 2.0


@pytest.mark.parametrize("speed", [1.0, 1.5])
def test_placements_say_where_each_part_starts_in_the_finished_narration(clips: list[np.ndarray],
                                                                        speed: float) -> None:
    padded = [np.concatenate([np.zeros(int(lead * SR), np.float32), clip]) for lead, clip in
              zip((0.8, 0.1, 1.5, 0.4), clips)]
    silent = np.zeros(SR, np.float32)
    placements: list = []
    out = finish_narration([padded[0], silent, *padded[1:]], SR, speed=speed, placements=placements)
    assert placements[1] is None and len(placements) == 5  # a silent part is left out
    for clip, lead, at in zip(clips, (0.8, 0.1, 1.5, 0.4), placements[:1] + placements[2:]):
        # the clip's own first loud sample is where the placement says it is
        own = np.flatnonzero(np.abs(clip) > 0.05)[0] / SR
        found = at(lead + own)
        window = out[int((found - 0.02) * SR):int((found + 0.02) * SR)]
        assert np.abs(window).max() > 0.02, (at, found)
        before = out[int((found - 0.15) * SR):int((found - 0.05) * SR)]
        assert np.abs(before).max() < np.abs(window).max()
