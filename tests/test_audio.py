"""tasks.audio.prepare.prepare_chunks on real speech (../shared/data/speech): decoding every format the
pipeline meets, chunks within budget that tile the recording, cuts in pauses, loudness, silence,
bad input, and memory that does not grow with the recording's length."""
from __future__ import annotations

import importlib.util
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from audiobatch.tasks.audio.codecs import decode, encode
from audiobatch.tasks.audio.loudness import StreamingLoudness, measure_lufs
from audiobatch.tasks.audio.pauses import frame_levels_db
from audiobatch.tasks.audio.prepare import (PREPARE_RATE, Chunk, PreparedAudio, max_chunk_seconds,
                                            prepare_chunks)
from audiobatch.tasks.errors import ConfigError, InputError
from tests.helpers.data import SPEECH

ROOT = Path(__file__).resolve().parents[1]

LONG = SPEECH / "derived__LJ001-0009_to_0032_concat.wav"  # 171 s, 22.05 kHz, no added gaps
RATE = PREPARE_RATE
ONE_SAMPLE = 1.0 / RATE


def chunk_samples(chunk: Chunk) -> np.ndarray:
    info = sf.info(chunk.path)
    assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, "PCM_16")
    samples, _ = sf.read(chunk.path, dtype="int16")
    return samples.astype(np.float32) / 32767  # the scale tasks.audio.codecs.to_int16 writes with


def assert_tiles(prepared: PreparedAudio, max_chunk_s: float, overlap_samples: int = 0) -> None:
    """Chunks cover the recording from 0 to its end; consecutive ones overlap by exactly
    `overlap_samples`; none is longer than max_chunk_s; positions are sample-accurate."""
    chunks = prepared.chunks
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start_sample == 0 and chunks[0].start_s == 0.0
    assert chunks[-1].end_s == pytest.approx(prepared.duration_s, abs=1e-9)
    for before, after in zip(chunks, chunks[1:]):
        assert after.start_sample == before.end_sample - overlap_samples
    for chunk in chunks:
        assert chunk.duration_s <= max_chunk_s
        assert chunk.start_s == chunk.start_sample / RATE and chunk.end_s == chunk.end_sample / RATE
        assert len(chunk_samples(chunk)) == chunk.end_sample - chunk.start_sample


@pytest.fixture(scope="module")
def long_source() -> np.ndarray:
    return decode(LONG, RATE)


@pytest.fixture(scope="module")
def long_prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedAudio:
    return prepare_chunks(LONG, tmp_path_factory.mktemp("long"), max_chunk_s=30.0, label=LONG.name)


def test_long_file_chunks_fit_30_s_and_tile_the_recording(long_prepared: PreparedAudio) -> None:
    prepared = long_prepared
    assert 7 <= len(prepared.chunks) <= 12  # 171 s in chunks of (30 s minus at most the window)
    assert_tiles(prepared, 30.0)
    header_duration = sf.info(LONG).duration
    assert sum(c.duration_s for c in prepared.chunks) == pytest.approx(prepared.duration_s, abs=ONE_SAMPLE)
    assert prepared.duration_s == pytest.approx(header_duration, abs=ONE_SAMPLE)
    assert not prepared.silent
    assert all(c.cut == "pause" for c in prepared.chunks[:-1]) and prepared.chunks[-1].cut == "end"


def test_chunks_hold_the_source_audio_at_their_stated_positions(long_prepared: PreparedAudio,
                                                                long_source: np.ndarray) -> None:
    for chunk in long_prepared.chunks:
        gain = 10 ** (chunk.gain_db / 20)
        expected = long_source[chunk.start_sample:chunk.end_sample]
        np.testing.assert_allclose(chunk_samples(chunk) / gain, expected, atol=1.01 / 32767 / gain)


def test_cuts_fall_where_the_speech_is_quiet(long_prepared: PreparedAudio,
                                             long_source: np.ndarray) -> None:
    levels = frame_levels_db(long_source, 400)  # 25 ms frames
    speech_median = float(np.median(levels[levels > -45.0]))
    for chunk in long_prepared.chunks[:-1]:
        around = long_source[chunk.end_sample - 400:chunk.end_sample + 400]  # 25 ms either side
        level = 10 * math.log10(float(np.mean(around.astype(np.float64) ** 2)) + 1e-12)
        assert level < speech_median - 20.0, f"cut at {chunk.end_s:.2f} s is in speech ({level:.1f} dB)"


def test_cuts_land_in_the_silences_between_known_clips(tmp_path: Path) -> None:
    """Clips of real speech joined by 0.8 s gaps (quiet room noise): every cut is in a gap."""
    names = ["coqui-tts__LJ001-0002.wav", "pocketsphinx__goforward.wav", "coqui-tts__LJ001-0004.wav",
             "pocketsphinx__sense_and_sensibility_01_austen_64kb-0880.wav", "deepspeech__LDC93S1.wav",
             "pocketsphinx__sense_and_sensibility_01_austen_64kb-0890.wav", "coqui-tts__LJ001-0008.wav",
             "speech_recognition__english.wav", "pocketsphinx__cards_005.wav",
             "pocketsphinx__sense_and_sensibility_01_austen_64kb-0930.wav"] * 2
    rng = np.random.default_rng(7)
    gap = RATE * 8 // 10
    parts, gaps, position = [], [], 0
    for name in names:
        clip = decode(SPEECH / name, RATE)
        clip = clip / max(np.abs(clip).max(), 1e-6) * 0.5
        parts += [clip, (rng.standard_normal(gap) * 3e-4).astype(np.float32)]
        position += len(clip)
        gaps.append((position, position + gap))
        position += gap
    path = tmp_path / "joined.flac"
    path.write_bytes(encode(np.concatenate(parts), RATE, "flac"))

    prepared = prepare_chunks(path, tmp_path / "work", max_chunk_s=15.0, label=path.name)

    assert_tiles(prepared, 15.0)
    assert len(prepared.chunks) >= 5
    for chunk in prepared.chunks[:-1]:
        assert chunk.cut == "pause"
        assert any(lo <= chunk.end_sample <= hi for lo, hi in gaps), \
            f"cut at {chunk.end_s:.2f} s is not in one of the inserted gaps"


def test_overlap_is_exact_and_chunks_still_fit(tmp_path: Path, long_source: np.ndarray) -> None:
    prepared = prepare_chunks(LONG, tmp_path, max_chunk_s=30.0, label="lj", overlap_s=1.5)
    assert_tiles(prepared, 30.0, overlap_samples=int(1.5 * RATE))
    for chunk in prepared.chunks:
        gain = 10 ** (chunk.gain_db / 20)
        np.testing.assert_allclose(chunk_samples(chunk) / gain,
                                   long_source[chunk.start_sample:chunk.end_sample],
                                   atol=1.01 / 32767 / gain)


def _variant(tmp_path: Path, kind: str) -> tuple[Path, float]:
    """A test file in another format, and its true duration in seconds."""
    if kind == "mp3":
        samples = decode(SPEECH / "coqui-tts__LJ001-0001.wav", 22050)
        path = tmp_path / "lj.mp3"
        path.write_bytes(encode(samples, 22050, "mp3"))
        return path, len(samples) / 22050
    if kind == "wav 8 kHz":
        samples = decode(SPEECH / "sphinx4__10001-90210-01803.wav", 8000)
        path = tmp_path / "digits-8k.wav"
        path.write_bytes(encode(samples, 8000, "wav"))
        return path, len(samples) / 8000
    path = SPEECH / kind
    return path, sf.info(path).duration


@pytest.mark.parametrize("kind", ["openai-whisper__jfk.flac",  # 44.1 kHz stereo 24-bit flac
                                  "speech_recognition__english.wav",  # 44.1 kHz
                                  "coqui-tts__LJ001-0003.wav",  # 22.05 kHz
                                  "mp3", "wav 8 kHz"])
def test_every_format_becomes_16k_mono_chunks_of_the_right_length(tmp_path: Path, kind: str) -> None:
    path, duration = _variant(tmp_path, kind)
    prepared = prepare_chunks(path, tmp_path / "work", max_chunk_s=4.0, label=path.name)
    assert prepared.sample_rate == RATE
    assert prepared.duration_s == pytest.approx(duration, abs=0.002)
    assert len(prepared.chunks) >= math.ceil(duration / 4.0)
    assert_tiles(prepared, 4.0)
    assert not prepared.silent and not prepared.chunks[0].silent


@pytest.mark.parametrize("max_chunk_s", [20.0, 60.0])  # chunks measured alone; from the stream's steps
def test_chunks_are_normalised_to_the_target_loudness(tmp_path: Path, long_source: np.ndarray,
                                                     max_chunk_s: float) -> None:
    quiet = tmp_path / "quiet.flac"
    quiet.write_bytes(encode(long_source * 10 ** (-16 / 20), RATE, "flac"))  # about -37 LUFS
    meter = pyloudnorm.Meter(RATE)
    source_lufs = meter.integrated_loudness(decode(quiet, RATE).astype(np.float64))

    prepared = prepare_chunks(quiet, tmp_path / "work", max_chunk_s=max_chunk_s, label="quiet",
                              target_lufs=-26.0)

    assert prepared.source_loudness_lufs == pytest.approx(source_lufs, abs=0.05)
    for chunk in prepared.chunks:
        samples = chunk_samples(chunk).astype(np.float64)
        assert meter.integrated_loudness(samples) == pytest.approx(-26.0, abs=0.3)
        assert chunk.gain_db > 8.0


def test_loud_target_is_limited_by_the_peak_ceiling_not_clipped(tmp_path: Path) -> None:
    prepared = prepare_chunks(LONG, tmp_path, max_chunk_s=60.0, label="lj", target_lufs=-10.0)
    for chunk in prepared.chunks:
        samples = chunk_samples(chunk)
        peak_db = 20 * math.log10(float(np.abs(samples).max()))
        assert -1.1 < peak_db <= -0.99  # at the -1 dBFS ceiling: the gain was limited
        assert pyloudnorm.Meter(RATE).integrated_loudness(samples.astype(np.float64)) < -15.0


def test_streaming_loudness_matches_pyloudnorm(long_source: np.ndarray) -> None:
    meter = StreamingLoudness(RATE)
    for start in range(0, len(long_source), 1152):  # decoder-sized blocks
        meter.add(long_source[start:start + 1152])
    expected = pyloudnorm.Meter(RATE).integrated_loudness(long_source.astype(np.float64))
    assert meter.integrated_lufs() == pytest.approx(expected, abs=0.01)
    assert measure_lufs(long_source[:RATE * 5], RATE) == pytest.approx(
        pyloudnorm.Meter(RATE).integrated_loudness(long_source[:RATE * 5].astype(np.float64)), abs=0.01)


def test_a_long_segments_loudness_comes_from_the_stream_as_if_measured_alone(
        long_source: np.ndarray) -> None:
    """Chunk gains reuse the stream meter's K-weighted steps instead of filtering each chunk
    again; for chunks of 30 s and more that agrees with measuring the chunk by itself."""
    meter = StreamingLoudness(RATE)
    meter.add(long_source)
    reference = pyloudnorm.Meter(RATE)
    for start_s, stop_s in ((0.0, 30.0), (12.345, 100.0), (40.01, 171.0)):
        start, stop = round(start_s * RATE), min(round(stop_s * RATE), len(long_source))
        alone = reference.integrated_loudness(long_source[start:stop].astype(np.float64))
        assert meter.segment_lufs(start, stop) == pytest.approx(alone, abs=0.1)
    assert meter.segment_lufs(0, 29 * RATE) is None  # short: the 100 ms grid's edges weigh
    meter.forget_before(50 * RATE)
    assert meter.segment_lufs(40 * RATE, 100 * RATE) is None  # forgotten: measure it alone
    assert meter.segment_lufs(50 * RATE, 100 * RATE) is not None


def test_silence_only_input_is_flagged_and_left_alone(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    hiss = (rng.standard_normal(RATE * 12) * 1e-4).astype(np.float32)  # -80 dBFS room tone
    path = tmp_path / "silence.wav"
    path.write_bytes(encode(hiss, RATE, "wav"))

    prepared = prepare_chunks(path, tmp_path / "work", max_chunk_s=5.0, label="silence.wav")

    assert prepared.silent
    assert prepared.source_loudness_lufs is None
    assert all(c.silent and c.gain_db == 0.0 for c in prepared.chunks)
    assert np.abs(chunk_samples(prepared.chunks[0])).max() < 1e-3  # not amplified
    assert_tiles(prepared, 5.0)


def test_speech_followed_by_silence_flags_only_the_silent_chunks(tmp_path: Path) -> None:
    speech = decode(SPEECH / "coqui-tts__LJ001-0001.wav", RATE)
    path = tmp_path / "speech-then-silence.wav"
    path.write_bytes(encode(np.concatenate([speech, np.zeros(RATE * 20, np.float32)]), RATE, "wav"))
    prepared = prepare_chunks(path, tmp_path / "work", max_chunk_s=10.0, label=path.name)
    assert not prepared.silent
    assert not prepared.chunks[0].silent and prepared.chunks[-1].silent


@pytest.mark.parametrize("seconds", [1.0, 0.1])
def test_very_short_audio_gives_one_levelled_chunk(tmp_path: Path, seconds: float) -> None:
    clip = decode(SPEECH / "openai-whisper__jfk.flac", RATE)[RATE * 2:RATE * 2 + int(seconds * RATE)]
    path = tmp_path / "short.wav"
    path.write_bytes(encode(clip * 0.1, RATE, "wav"))
    prepared = prepare_chunks(path, tmp_path / "work", max_chunk_s=max_chunk_seconds(4096, 10),
                              label="short.wav")
    assert len(prepared.chunks) == 1
    assert prepared.duration_s == pytest.approx(seconds, abs=ONE_SAMPLE)
    assert prepared.chunks[0].gain_db > 0 and not prepared.silent
    assert_tiles(prepared, seconds)


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00not really a wav" + bytes(range(256)) * 8])
def test_undecodable_or_empty_files_raise_input_error_naming_the_item(tmp_path: Path,
                                                                      content: bytes) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(InputError, match="episode-42"):
        prepare_chunks(path, tmp_path / "work", max_chunk_s=30.0, label="episode-42")


def test_mostly_corrupt_file_raises_input_error_and_leaves_no_chunks(
        tmp_path: Path, long_source: np.ndarray) -> None:
    """Light damage is decoded through (tests/test_damaged_audio.py); a file whose audio data
    is mostly garbage fails, and the chunks written before the end are removed."""
    data = bytearray(encode(long_source, RATE, "mp3"))
    rng = np.random.default_rng(0)
    for start in range(len(data) // 4, len(data) - 1000, 1500):
        data[start:start + 1000] = rng.integers(0, 256, 1000, np.uint8).tobytes()
    path = tmp_path / "damaged.mp3"
    path.write_bytes(bytes(data))
    work = tmp_path / "work"
    with pytest.raises(InputError, match="damaged.mp3.*could not be decoded"):
        prepare_chunks(path, work, max_chunk_s=20.0, label="damaged.mp3")
    assert list(work.iterdir()) == []


def test_zero_length_audio_raises_input_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(encode(np.zeros(0, np.float32), RATE, "wav"))
    with pytest.raises(InputError, match="empty.wav.*no audio"):
        prepare_chunks(path, tmp_path / "work", max_chunk_s=30.0, label="empty.wav")


def test_missing_file_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nowhere.mp3"):
        prepare_chunks(tmp_path / "nowhere.mp3", tmp_path / "work", max_chunk_s=30.0,
                       label="nowhere.mp3")


def test_budget_too_small_for_any_audio_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="budget"):
        prepare_chunks(LONG, tmp_path, max_chunk_s=0.2, label="lj")


def test_two_items_can_share_a_work_directory(tmp_path: Path) -> None:
    first = prepare_chunks(LONG, tmp_path, max_chunk_s=60.0, label="a/episode.wav")
    second = prepare_chunks(LONG, tmp_path, max_chunk_s=60.0, label="b/episode.wav")
    assert not {c.path for c in first.chunks} & {c.path for c in second.chunks}


def _load_benchmark_module():  # benchmarks/ is scripts, not a package
    spec = importlib.util.spec_from_file_location("bench_prepare", ROOT / "benchmarks" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_memory_stays_bounded_by_one_chunk_on_a_30_minute_file(tmp_path: Path) -> None:
    """30 min of real speech (flac, written block by block) decodes to 115 MB of float32; the
    Python-side peak while preparing must stay within a few 30 s chunks (1.9 MB each).
    tracemalloc sees numpy buffers; FFmpeg's own small per-frame buffers are not counted."""
    source = _load_benchmark_module().write_repeated_speech(tmp_path / "long.flac", 30 * 60)
    chunk_bytes = 30.0 * RATE * 4
    tracemalloc.start()
    try:
        prepared = prepare_chunks(source, tmp_path / "work", max_chunk_s=30.0, label="long.flac")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert prepared.duration_s == pytest.approx(30 * 60, abs=ONE_SAMPLE)
    assert_tiles(prepared, 30.0)
    decoded_bytes = prepared.duration_s * RATE * 4
    assert peak < 3 * chunk_bytes, f"peak {peak / 1e6:.1f} MB for {chunk_bytes / 1e6:.1f} MB chunks"
    assert peak < decoded_bytes / 20


@pytest.mark.parametrize("subtype,fmt", [("PCM_16", "WAV"), ("FLOAT", "WAV"), ("PCM_16", "FLAC")])
def test_audio_already_at_the_rate_decodes_to_what_ffmpegs_resampler_gives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, subtype: str, fmt: str) -> None:
    """16 kHz mono input skips building a resampler per file (many short clips paid ~1 ms of
    held GIL each for it); its samples are exactly what the resampler made of them."""
    from audiobatch.tasks.audio import codecs

    speech = decode(SPEECH / "pocketsphinx__goforward.wav", 16000)
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, speech, 16000, subtype=subtype, format=fmt)
    passed = []
    original = codecs._Resampler._passes_through
    monkeypatch.setattr(codecs._Resampler, "_passes_through",
                        lambda self, frame: passed.append(original(self, frame)) or passed[-1])
    direct = decode(path, 16000)
    assert passed == [True]
    monkeypatch.setattr(codecs._Resampler, "_passes_through", lambda self, frame: False)
    resampled = decode(path, 16000)
    assert direct.dtype == np.float32 and np.array_equal(direct, resampled)
    assert len(decode(path, 24000)) == round(len(speech) * 1.5)  # other rates still resample


@pytest.mark.parametrize("name", ["dashwood.mp3", "printing-history.mp3"])
def test_decoding_in_blocks_gives_what_decoding_frame_by_frame_gives(
        monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Decoded frames are joined into blocks before conversion (per-frame calls cost more than
    the work); FFmpeg's resampler is a stream, so the samples are exactly the same."""
    from audiobatch.tasks.audio import codecs

    path = Path(__file__).resolve().parents[1] / "manifests" / "audio" / name
    blocked = decode(path, 16000)
    monkeypatch.setattr(codecs, "BATCH_SAMPLES", 1)  # every frame on its own, as before
    assert np.array_equal(blocked, decode(path, 16000)) and len(blocked) > 16000 * 5
