"""Word times by forced alignment with the embedded Whisper (localmodel/align.py,
tasks/captions/words.py): the `words` dataset, word-timed captions and the Whisper-style JSON, checked
against the known speech onsets of real LJ Speech clips joined with known pauses."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytest_asyncio

from audiobatch.tasks.audio.codecs import decode
from audiobatch.tasks.captions.words import Word, clamp_to_speech, word_pieces
from tests.helpers.data import SPEECH
from tests.helpers.e2e import Concatenation, RunResult, concatenate_clips, normalise, run_transcribe, write_manifest

CLIPS = [SPEECH / f"coqui-tts__LJ001-000{i}.wav" for i in range(1, 9)]
GAPS_S = [0.5, 1.0, 0.7, 1.5, 0.6, 1.2, 0.8]


def speech_onset_s(clip: Path) -> float:
    """Where the reader's voice starts in a studio clip: the first 10 ms frame within 35 dB
    of the clip's loudest frame."""
    samples = decode(clip, 16000)
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160)
    level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    return float(np.argmax(level > level.max() - 35) * 0.01)


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> tuple[Concatenation, list[float]]:
    recording = concatenate_clips(CLIPS, GAPS_S, tmp_path_factory.mktemp("words") / "joined.wav")
    onsets = [start + speech_onset_s(clip) for start, clip in zip(recording.starts_s, CLIPS)]
    return recording, onsets


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def words_run(prefect_api: None, joined: tuple[Concatenation, list[float]],
                    tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """57 s in requests of at most 29 s, so words come from several chunks."""
    folder = tmp_path_factory.mktemp("words-run")
    manifest = write_manifest(folder / "m.csv", [{"id": "joined", "audio": str(joined[0].path)}])
    return await run_transcribe(manifest, folder / "out", max_audio_tokens=300)


def test_words_start_at_the_known_speech_onsets(words_run: RunResult,
                                                joined: tuple[Concatenation, list[float]]) -> None:
    _, onsets = joined
    words = words_run.dataset("words")
    transcript = words_run.item("joined", "transcripts")
    assert transcript["n_chunks"] >= 2
    assert list(words["word_index"]) == list(range(len(words)))
    assert " ".join(words["word"]) == " ".join(transcript["text"].split())  # every word, once
    assert (words["end_s"] >= words["start_s"]).all() and words["start_s"].is_monotonic_increasing
    assert words["probability"].between(0, 1).all()
    errors = []
    for onset in onsets:  # the first word after each pause
        first = words[words["end_s"] > onset + 0.05].iloc[0]
        errors.append(first["start_s"] - onset)
    errors = np.abs(errors)
    print(f"word onset error: median {np.median(errors) * 1000:.0f} ms, max {errors.max() * 1000:.0f} ms")
    assert np.median(errors) <= 0.1 and errors.max() <= 0.3  # measured: 15 ms, 50 ms


def test_captions_are_timed_from_the_words(words_run: RunResult,
                                           joined: tuple[Concatenation, list[float]]) -> None:
    _, onsets = joined
    segments = words_run.dataset("segments")
    words = words_run.dataset("words")
    for onset in onsets:  # a caption begins with the speech after every pause
        assert np.min(np.abs(segments["start_s"] - onset)) <= 0.4
    assert set(segments["start_s"]) <= set(words["start_s"])  # starts are word starts
    # a caption ends with its last word, or later when it must stay a second or be read at
    # 20 characters a second (tasks/captions/cues.py), and two frames before the next starts
    transcript = words_run.item("joined", "transcripts")
    cues = json.loads(Path(transcript["json_path"]).read_text(encoding="utf-8"))["segments"]
    for cue, following in zip(cues, cues[1:] + [None]):
        spoken_end = cue["words"][-1]["end"]
        needed = cue["start"] + max(1.0, len(cue["text"]) / 20)
        assert spoken_end - 0.08 - 1e-6 <= cue["end"] <= max(spoken_end, needed) + 1e-6
        assert following is None or cue["end"] <= following["start"] - 0.08 + 1e-6


def test_json_output_has_segments_with_words(words_run: RunResult) -> None:
    transcript = words_run.item("joined", "transcripts")
    document = json.loads(Path(transcript["json_path"]).read_text(encoding="utf-8"))
    assert document["text"] == transcript["text"]
    words = [w for segment in document["segments"] for w in segment["words"]]
    assert [w["word"] for w in words] == list(words_run.dataset("words")["word"])
    for segment in document["segments"]:
        assert segment["start"] == segment["words"][0]["start"]
        assert normalise(segment["text"]) == normalise(" ".join(w["word"] for w in segment["words"]))


@pytest.mark.usefixtures("prefect_api")
async def test_output_format_chooses_the_files_and_no_word_times_skips_alignment(
        joined: tuple[Concatenation, list[float]], tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "clip", "audio": str(CLIPS[0])}])
    run = await run_transcribe(manifest, tmp_path / "out", output_format="json,srt",
                               word_times=False)
    transcript = run.item("clip", "transcripts")
    assert transcript["json_path"] and transcript["srt_path"]
    assert pd.isna(transcript["txt_path"]) and pd.isna(transcript["vtt_path"])
    assert not (tmp_path / "out" / "words").exists()
    assert sorted(p.suffix for p in (tmp_path / "out" / "media").rglob("clip.*")) == [".json", ".srt"]


def test_word_edges_in_a_pause_move_to_the_speech() -> None:
    spans = [(1.0, 2.0), (3.0, 4.0)]
    words = [Word("a", 0.6, 1.5, 0.9), Word("b", 1.6, 2.6, 0.9), Word("c", 2.4, 3.5, 0.9),
             Word("d", 1.8, 3.6, 0.9)]  # mostly in the second stretch of speech
    assert [(w.start_s, w.end_s) for w in clamp_to_speech(words, spans)] == [
        (1.0, 1.5), (1.6, 2.0), (3.0, 3.5), (3.0, 3.6)]


def test_the_first_word_after_a_pause_stays_on_its_own_voice_when_dtw_smears_it_onward() -> None:
    """Seen on an economy run of the lecture: "Basle," after a long pause, found at its onset
    but stretched over the next pause and "Paris"; by overlap alone it went 1 s late."""
    spans = [(146.17, 149.63), (150.43, 151.04), (151.4, 152.06), (153.05, 155.29)]
    words = [Word("Strasburg,", 148.96, 150.5, 0.9), Word("Basle,", 150.5, 152.54, 0.9),
             Word("Paris,", 152.54, 153.26, 0.9)]
    assert [(w.start_s, w.end_s) for w in clamp_to_speech(words, spans)] == [
        (148.96, 149.63), (150.43, 151.04), (153.05, 153.26)]
    # not after a pause (the stretch holds the word before), or too little of it there: overlap
    after_a_word = [Word("in", 150.2, 150.7, 0.9), Word("Basle,", 150.7, 152.54, 0.9)]
    assert clamp_to_speech(after_a_word, spans)[1].start_s == 151.4
    brushed = [Word("Basle,", 150.8, 152.54, 0.9)]
    assert clamp_to_speech(brushed, spans)[0].start_s == 151.4


def test_aligning_a_short_request_reuses_the_encoding_whisper_just_heard() -> None:
    """A request of at most 30 s: hearing it and placing its words run Whisper's encoder once
    (the encoder is most of an alignment's cost), and the words land exactly where an aligner
    that encodes afresh puts them."""
    from audiobatch.localmodel.align import WhisperAligner
    from audiobatch.localmodel.engines import Engines

    samples = decode(SPEECH / "openai-whisper__jfk.flac", 16000)
    engines = Engines()  # its own models: nothing remembered from other tests
    heard = engines.hear_blocking(samples)
    encodings = engines.whisper().encodings
    hits = encodings.hits
    words = WhisperAligner(engines).align_blocking(samples, word_pieces(heard.text), "en")
    assert encodings.hits == hits + 1

    fresh = Engines()
    afresh = WhisperAligner(fresh).align_blocking(samples, word_pieces(heard.text), "en")
    assert fresh.whisper().encodings.hits == 0
    assert len(words) == len(afresh) == len(heard.text.split()) >= 20
    # nothing heard: the encoder ran on the clip's 11 s and 4 s of padding, not 30 s; the
    # words land where they did (measured over 69 clips: the same onsets, the same verdicts)
    assert all(abs(a.start_s - b.start_s) <= 0.1 and abs(a.end_s - b.end_s) <= 0.1
               for a, b in zip(words, afresh))


def test_alignment_encodes_what_a_window_holds_not_its_padding() -> None:
    """Whisper pads every window to 30 s; forced alignment (given the text) encodes the audio
    plus a second of padding, at least 15 s, and a full window whole."""
    from faster_whisper.audio import pad_or_trim

    from audiobatch.localmodel.encoder import kept_frames
    from audiobatch.localmodel.engines import Engines

    extract = Engines().whisper().feature_extractor
    samples = decode(SPEECH / "derived__LJ001-0009_to_0032_concat.wav", 16000)
    for seconds, kept in [(3, 1500), (14, 1500), (22.5, 2400), (30, 3000), (45, 3000)]:
        features = extract(samples[:round(seconds * 16000)])
        assert kept_frames(pad_or_trim(features[:, :-1])) == kept, seconds


def test_each_word_is_given_to_whisper_as_whisper_writes_it() -> None:
    """One leading space per word: the text's own space was once doubled (" " + " in"), an
    extra token per word that cost the alignment its scores (mean word probability of the
    LJ001-0001 transcript 0.42 before, 0.91 after) and its edges."""
    from audiobatch.localmodel.align import _tokenizer, _as_whisper_writes
    from audiobatch.localmodel.engines import shared_engines

    tokenizer = _tokenizer(shared_engines().whisper(), "en")
    pieces = word_pieces("Printing, in the only sense")
    assert pieces == ["Printing,", " in", " the", " only", " sense"]
    written = [_as_whisper_writes(p, first=i == 0) for i, p in enumerate(pieces)]
    assert written == [" Printing,", " in", " the", " only", " sense"]
    assert [len(tokenizer.encode(w)) for w in written[1:]] == [1, 1, 1, 1]


def test_words_stretched_over_quiet_keep_only_their_sound() -> None:
    from audiobatch.tasks.captions.words import off_quiet

    quiet = [(2.0, 3.5), (5.0, 5.1)]  # a pause, and a short dip (a stop consonant)
    words = [Word("a", 1.0, 2.8, 0.9),   # ends in the pause: ends where it begins
             Word("b", 3.2, 4.0, 0.9),   # begins in it: begins after it
             Word("c", 1.5, 4.5, 0.9),   # spans it: keeps the longer side
             Word("d", 4.8, 5.4, 0.9)]   # the dip is no pause
    assert [(w.start_s, w.end_s) for w in off_quiet(words, quiet)] == [
        (1.0, 2.0), (3.5, 4.0), (3.5, 4.5), (4.8, 5.4)]


def test_a_word_across_a_cut_out_stretch_keeps_the_side_where_it_has_time() -> None:
    from audiobatch.localmodel.align import Timeline

    # cut audio 0-10 s is the original 0-10 s; 10-20 s is the original 40-50 s (30 s cut out)
    timeline = Timeline(((0.0, 0.0), (10.0, 40.0)))
    mostly_after = timeline.word(Word("w", 9.8, 10.6, 0.9))
    mostly_before = timeline.word(Word("w", 9.2, 10.1, 0.9))
    assert (mostly_after.start_s, mostly_after.end_s) == pytest.approx((40.0, 40.6))
    assert (mostly_before.start_s, mostly_before.end_s) == pytest.approx((9.2, 10.0))
