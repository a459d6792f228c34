"""Decoding through damage (tasks/audio/codecs.py), as the ffmpeg tool does, on real speech:
podcast audio made of MP3 segments with their own ID3 tags and junk between them (dynamic ad
insertion), a corrupt stretch, a float WAV with NaN/inf samples, and a file too damaged to use.
The end-to-end test runs the transcription flow on them and reads what `items` reports."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiobatch.tasks.audio.codecs import DecodeReport, decode, encode, iter_decoded
from audiobatch.tasks.errors import InputError
from tests.helpers.bombs import flac_hours
from tests.helpers.data import REFERENCES, SPEECH
from tests.helpers.e2e import corpus_wer, run_transcribe, write_manifest

SEGMENTS = ["coqui-tts__LJ001-0001.wav", "coqui-tts__LJ001-0003.wav", "coqui-tts__LJ001-0005.wav"]
with open(REFERENCES, newline="", encoding="utf-8") as _handle:
    REFERENCE = {row["file"]: row["reference_text"] for row in csv.DictReader(_handle)}


def mp3_segment(name: str, title: str) -> bytes:
    """One clip as its own MP3 file, with an ID3 tag (as ad servers stitch them)."""
    return encode(decode(SPEECH / name, 22050), 22050, "mp3", title=title)


@pytest.fixture(scope="module")
def podcast_with_ads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tagged MP3 segments joined with random junk and zero padding between them, and
    800 bytes of garbage written over the middle of the second."""
    rng = np.random.default_rng(1)
    segments = [mp3_segment(name, f"segment {i}") for i, name in enumerate(SEGMENTS)]
    data = bytearray(segments[0] + rng.bytes(3000) + segments[1] + bytes(500) + segments[2])
    middle = len(segments[0]) + 3000 + len(segments[1]) // 2
    data[middle:middle + 800] = rng.bytes(800)
    path = tmp_path_factory.mktemp("damaged") / "episode.mp3"
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def float_wav_with_nans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples, rate = sf.read(SPEECH / SEGMENTS[0], dtype="float32")
    where = np.random.default_rng(0).choice(len(samples), 11, replace=False)
    samples[where[:6]] = np.nan
    samples[where[6:9]] = np.inf
    samples[where[9:]] = -np.inf
    path = tmp_path_factory.mktemp("nan") / "speech-with-nans.wav"
    sf.write(path, samples, rate, subtype="FLOAT")
    return path


def test_segments_with_tags_and_junk_decode_through_the_damage(podcast_with_ads: Path) -> None:
    report = DecodeReport()
    samples = np.concatenate(list(iter_decoded(podcast_with_ads, 16000, "episode", report)))
    whole = sum(len(decode(SPEECH / name, 16000)) for name in SEGMENTS)
    assert len(samples) >= 0.97 * whole  # all but the corrupt stretch
    assert report.skipped_packets >= 1 and 0 < report.skipped_s < 1.0
    assert report.unreadable_share < 0.1


def test_non_finite_samples_are_repaired_not_spread(float_wav_with_nans: Path) -> None:
    report = DecodeReport()
    samples = np.concatenate(list(iter_decoded(float_wav_with_nans, 16000, "nans", report)))
    assert np.isfinite(samples).all() and report.repaired_samples == 11
    clean = decode(SPEECH / SEGMENTS[0], 16000)
    changed = int((np.abs(samples - clean) > 1e-3).sum())
    assert changed <= 11 * 40  # each repaired sample touches only the resampler's taps


def test_a_file_mostly_garbage_fails_with_a_clear_reason(tmp_path: Path) -> None:
    good = mp3_segment(SEGMENTS[1], "x")
    data = bytearray(good)
    rng = np.random.default_rng(5)
    for start in range(2000, len(data) - 400, 900):  # most frames overwritten
        data[start:start + 600] = rng.bytes(600)
    path = tmp_path / "ruined.mp3"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"ruined: .*could not be decoded.*re-download"):
        list(iter_decoded(path, 16000, "ruined"))


@pytest.mark.usefixtures("prefect_api")
async def test_damaged_files_are_transcribed_and_the_damage_reported(
        podcast_with_ads: Path, float_wav_with_nans: Path, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.flac"  # 757 bytes of FLAC at 8 Hz: 126 hours at 16 kHz (main: 6 GB)
    bomb.write_bytes(flac_hours(55))
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "episode", "audio": str(podcast_with_ads)},
                                                   {"id": "nans", "audio": str(float_wav_with_nans)},
                                                   {"id": "bomb", "audio": str(bomb)}])
    run = await run_transcribe(manifest, tmp_path / "out")
    assert run.statuses() == {"episode": "ok", "nans": "ok", "bomb": "failed"}
    assert "bomb: the file (757 bytes) holds more than 757 s of audio" in run.item("bomb")["error_message"]
    episode, nans = run.item("episode"), run.item("nans")
    assert episode["skipped_audio_s"] > 0 and episode["skipped_bytes"] > 0
    assert nans["repaired_samples"] == 11 and nans["skipped_audio_s"] == 0
    wer_episode = corpus_wer([" ".join(REFERENCE[n] for n in SEGMENTS)],
                             [run.item("episode", "transcripts")["text"]])
    wer_nans = corpus_wer([REFERENCE[SEGMENTS[0]]], [run.item("nans", "transcripts")["text"]])
    print(f"damaged episode WER {wer_episode:.2%} (skipped {episode['skipped_audio_s']:.2f} s); "
          f"NaN wav WER {wer_nans:.2%}")
    assert wer_episode <= 0.12 and wer_nans <= 0.05
