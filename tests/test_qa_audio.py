"""Transcript QA judged against the audio (issue 24; tasks/transcription/qa.py, agreement.py,
localmodel/align.py): replies that answer the speaker, chatter, refuse, loop or stop early are
told from transcripts by what the embedded Whisper hears in the chunk, not by their wording;
a real repetition is not a loop; no paid re-ask that cannot change the answer; nothing placed
over music or noise.

The remote model is tests/helpers/misbehaving.py: a real HTTP server on 127.0.0.1 in front of
the embedded model, misbehaving on a seeded 40% of first answers in five ways, in phrasings the
text checks do not all know. Held-out clips only (tests/helpers/heldout.py: nothing was tuned
on them), clean and through a telephone line.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf

from audiobatch.tasks.audio.codecs import decode
from audiobatch.tasks.audio.vad import no_speech_stretches, speech_spans
from audiobatch.tasks.captions.words import word_pieces
from audiobatch.tasks.transcription.qa import Evidence, judge
from tests.helpers.data import SPEECH
from tests.helpers.e2e import RunResult, corpus_wer, room_tone, run_transcribe, write_manifest
from tests.helpers.faultserver import FaultServer, Received, forward, rewritten
from tests.helpers.heldout import HELD_OUT, in_condition
from tests.helpers.misbehaving import ANSWERS, CHATTER, MODEL_NAME, REFUSALS, misbehaving_model
from tests.helpers.music import music_and_noise

RATE = 16_000


def aligner() -> Any:
    from audiobatch.localmodel.align import WhisperAligner
    from audiobatch.localmodel.engines import shared_engines

    return WhisperAligner(shared_engines())


def evidence_for(samples: np.ndarray, text: str) -> Evidence:
    words = aligner().align_blocking(samples, word_pieces(text), "en")
    return Evidence(speech_spans(samples), words, no_speech=no_speech_stretches(samples))


# --- the judgement, on real audio ---------------------------------------------------------------

@pytest.mark.parametrize("clip", ["openai-whisper__jfk.flac", "sphinx4__10001-90210-01803.wav",
                                  "pocketsphinx__sense_and_sensibility_01_austen_64kb-0920.wav"])
def test_an_answer_to_the_speaker_is_told_by_the_audio_not_its_wording(clip: str) -> None:
    """The answers share no phrase with the text checks' lists; the human reference (another
    writer's style than Whisper's) passes."""
    from tests.helpers.pauses import english_references

    samples = decode(SPEECH / clip, RATE)
    reference = english_references()[clip]
    assert judge(reference, finish_reason="stop", refusal=None,
                 evidence=evidence_for(samples, reference)).problems == ()
    for answer in ANSWERS:
        text = answer.format(topic="freedom", Topic="Freedom")
        verdict = judge(text, finish_reason="stop", refusal=None, evidence=evidence_for(samples, text))
        assert "mismatch" in verdict.problems, text


def spoken(text: str) -> np.ndarray:
    from audiobatch.localmodel.engines import OUTPUT_SAMPLE_RATE, shared_engines
    from audiobatch.tasks.audio.codecs import resample

    return resample(shared_engines().synthesize_blocking(text), OUTPUT_SAMPLE_RATE, RATE)


def test_a_spoken_repetition_is_not_a_loop_but_a_decoding_loop_is() -> None:
    """Issue 24, item 7: "word, word, word, word, word" said aloud was flagged as a loop and
    paid for twice. Said, every repeat has time in the audio; looped, the repeats have none."""
    said = "I said it five times: word, word, word, word, word."
    samples = spoken(said)
    verdict = judge(said, finish_reason="stop", refusal=None, evidence=evidence_for(samples, said))
    assert verdict.ok, verdict.problems
    looped = said + " word, word" * 10
    verdict = judge(looped, finish_reason="stop", refusal=None, evidence=evidence_for(samples, looped))
    assert "loop" in verdict.problems


@pytest.fixture(scope="module")
def speech_around_music(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A sentence, 30 s of music-like tones and noise, another sentence."""
    rng = np.random.default_rng(5)
    first = decode(SPEECH / "coqui-tts__LJ001-0001.wav", RATE)
    second = decode(SPEECH / "coqui-tts__LJ001-0003.wav", RATE)
    lead = room_tone(rng, 0.5, RATE)
    audio = np.concatenate([first, lead, music_and_noise(30.0, rng), lead, second])
    path = tmp_path_factory.mktemp("music") / "speech-music-speech.wav"
    sf.write(path, audio, RATE, subtype="PCM_16")
    start = (len(first) + len(lead)) / RATE
    return SimpleNamespace(path=path, samples=audio, music_s=(start, start + 30.0))


def test_the_aligner_places_no_word_in_music_between_two_sentences(
        speech_around_music: SimpleNamespace) -> None:
    """Before, DTW spread the second sentence over the music (20 words there, probability
    ~0): a window's words had nowhere else to go."""
    from tests.helpers.pauses import english_references

    references = english_references()
    text = references["coqui-tts__LJ001-0001.wav"] + " " + references["coqui-tts__LJ001-0003.wav"]
    evidence = evidence_for(speech_around_music.samples, text)
    start, end = speech_around_music.music_s
    assert [w.word for w in evidence.words if w.end_s > start + 0.3 and w.start_s < end - 0.3] == []
    assert judge(text, finish_reason="stop", refusal=None, evidence=evidence).ok


def test_the_embedded_model_drops_segments_that_lie_where_nobody_speaks() -> None:
    from audiobatch.localmodel.engines import over_speech

    samples = np.concatenate([decode(SPEECH / "coqui-tts__LJ001-0008.wav", RATE),
                              np.zeros(20 * RATE, dtype=np.float32)])
    segments = [SimpleNamespace(text=" has never been surpassed.", start=0.0, end=1.8),
                SimpleNamespace(text=" Thank you for watching!", start=9.0, end=12.0)]
    assert [s.text for s in over_speech(segments, samples)] == [" has never been surpassed."]


# --- runs -------------------------------------------------------------------------------------

@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def behaved_and_misbehaving(prefect_api: None, tmp_path_factory: pytest.TempPathFactory
                                  ) -> tuple[RunResult, RunResult, list, dict[str, str]]:
    """The held-out clips, clean and through a telephone line, transcribed by the same remote
    model twice: well-behaved, then misbehaving on 40% of first answers."""
    from tests.helpers.pauses import english_references

    folder = tmp_path_factory.mktemp("misbehaving")
    references, rows = english_references(), []
    rng = np.random.default_rng(24)
    said = {}
    for condition in ("clean", "telephone"):
        for clip in HELD_OUT:
            path = folder / f"{condition}-{Path(clip).stem}.wav"
            sf.write(path, in_condition(decode(SPEECH / clip, RATE), condition, rng), RATE)
            rows.append({"id": path.stem, "audio": str(path)})
            said[path.stem] = references[clip]
    manifest = write_manifest(folder / "m.csv", rows)
    with misbehaving_model(share=0.0) as model:
        behaved = await run_transcribe(manifest, folder / "behaved", base_url=model.base_url,
                                       model=model.name, word_times=False, concurrency=4)
    with misbehaving_model(share=0.4, seed=24) as model:
        misbehaving = await run_transcribe(manifest, folder / "misbehaving", base_url=model.base_url,
                                           model=model.name, word_times=False, concurrency=4)
        log = list(model.log)
    return behaved, misbehaving, log, said


def _wer(run: RunResult, said: dict[str, str]) -> float:
    texts = dict(zip(run.dataset("transcripts")["item_id"], run.dataset("transcripts")["text"]))
    return corpus_wer([said[k] for k in sorted(said)], [texts[k] for k in sorted(said)])


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two flow runs of 20 items: ~2 min on an idle machine, 11 at load 20
def test_misbehaving_first_answers_leave_the_transcripts_as_good_as_a_well_behaved_run(
        behaved_and_misbehaving: tuple[RunResult, RunResult, list, dict[str, str]]) -> None:
    behaved, misbehaving, log, said = behaved_and_misbehaving
    kinds = sorted({m.kind for m in log})
    print(f"{len(log)} of {len(said)} first answers misbehaved ({', '.join(kinds)}); WER "
          f"well-behaved {_wer(behaved, said):.2%}, misbehaving {_wer(misbehaving, said):.2%}")
    assert len(log) >= 0.25 * len(said) and len(kinds) == 5
    assert _wer(misbehaving, said) <= _wer(behaved, said) + 0.005
    texts = " ".join(misbehaving.dataset("transcripts")["text"]).lower()
    wrappers = [part for before, after in CHATTER for part in (before, after)] + REFUSALS + ANSWERS
    for phrase in wrappers:  # no answer, chatter or refusal text is left anywhere
        for sentence in phrase.replace("{text}", "|").replace("{topic}", "|").replace("{Topic}", "|").split("|"):
            for piece in (p.strip(" \n.!?:,").lower() for p in sentence.split(".")):
                assert len(piece) < 12 or piece not in texts, piece


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_well_behaved_model_is_never_asked_twice_and_a_misbehaving_one_pays_for_its_reasks(
        behaved_and_misbehaving: tuple[RunResult, RunResult, list, dict[str, str]]) -> None:
    behaved, misbehaving, log, said = behaved_and_misbehaving
    clean_costs = behaved.dataset("costs")
    assert clean_costs["reask_reason"].isna().all() and len(clean_costs) == len(said)
    assert not any(len(f) for f in behaved.dataset("transcripts")["qa_flags"])
    costs = misbehaving.dataset("costs")
    reasks = costs[costs["reask_reason"].notna()]
    # each misbehaving first answer asked again (chatter around a transcript the audio vouches
    # for may be stripped instead), and nothing else
    assert len([m for m in log if m.kind != "chatter"]) <= len(reasks) <= len(log)
    assert (reasks["attempt"] == 2).all() and reasks["cost_usd"].gt(0).all()
    assert misbehaving.summary["requests"] == len(said) + len(reasks)  # in the run's cost report
    assert costs["cost_usd"].sum() > clean_costs["cost_usd"].sum()


def _looping(text: str) -> str:
    return text + (" " + " ".join(text.split()[-2:])) * 10


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
async def test_no_reask_for_a_spoken_repetition_and_none_after_a_model_echoes_its_loops(
        tmp_path: Path) -> None:
    """Issue 24, item 7, with a deterministic remote model that hears the embedded way and
    ignores instruction and temperature: a spoken repetition is not re-asked; a loop is, but
    once the model has answered two re-asks with its first text, no more."""
    repeated = tmp_path / "repeated.wav"
    sf.write(repeated, spoken("Say it with me: yes, yes, yes, yes, yes."), RATE)
    clips = [SPEECH / name for name in ("coqui-tts__LJ001-0001.wav", "coqui-tts__LJ001-0003.wav",
                                        "coqui-tts__LJ001-0005.wav")]
    rows = [{"id": "repeated", "audio": str(repeated), "prompt": "honest"}]
    rows += [{"id": f"loop{k}", "audio": str(clip)} for k, clip in enumerate(clips)]
    manifest = write_manifest(tmp_path / "m.csv", rows)

    def deterministic(request: Received) -> Any:
        upstream = {"model": "audiobatch-local"}
        if "honest" in request.body.decode("utf-8", "replace")[:4000]:
            return forward(rewrite_request=lambda body: {**body, **upstream})
        def loop(answer: dict[str, Any]) -> dict[str, Any]:
            message = answer["choices"][0]["message"]
            message["content"] = _looping(message["content"])
            return answer
        return rewritten(loop, rewrite_request=lambda body: {**body, **upstream, "temperature": 0})

    from audiobatch.localmodel.app import create_app

    with FaultServer(deterministic, upstream=httpx.ASGITransport(app=create_app())) as server:
        run = await run_transcribe(manifest, tmp_path / "out", base_url=server.base_url,
                                   model=MODEL_NAME, word_times=False, concurrency=1)
    costs = run.dataset("costs")
    asked = costs.groupby("item_id").size().to_dict()
    assert asked["repeated"] == 1
    assert list(run.item("repeated", "transcripts")["qa_flags"]) == []
    assert sorted(asked[f"loop{k}"] for k in range(3)) == [1, 2, 2]  # the third: not again
    for k in range(3):
        assert "chunk 0: loop" in list(run.item(f"loop{k}", "transcripts")["qa_flags"])


@pytest.mark.usefixtures("prefect_api")
async def test_nothing_is_transcribed_over_music_and_noise(speech_around_music: SimpleNamespace,
                                                           tmp_path: Path) -> None:
    """Issue 24, item 3: the embedded model, one request; then a remote model that writes
    text where the music is, which is flagged."""
    from tests.helpers.pauses import english_references

    references = english_references()
    said = references["coqui-tts__LJ001-0001.wav"] + " " + references["coqui-tts__LJ001-0003.wav"]
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "music", "audio": str(speech_around_music.path)}])
    run = await run_transcribe(manifest, tmp_path / "out")
    start, end = speech_around_music.music_s
    words = run.dataset("words")
    assert words[(words["end_s"] > start + 0.3) & (words["start_s"] < end - 0.3)].empty
    segments = run.dataset("segments")
    assert segments[(segments["end_s"] > start + 0.5) & (segments["start_s"] < end - 0.5)].empty
    transcript = run.item("music", "transcripts")
    assert corpus_wer([said], [transcript["text"]]) <= 0.1
    assert list(transcript["qa_flags"]) == []

    def lyrics(answer: dict[str, Any]) -> dict[str, Any]:
        message = answer["choices"][0]["message"]
        message["content"] = message["content"].replace(
            "exhibition. ", "exhibition. La la la, the music plays on and on. ")
        return answer

    from audiobatch.localmodel.app import create_app

    with FaultServer(lambda _: rewritten(lyrics, rewrite_request=lambda b: {**b, "model": "audiobatch-local"}),
                     upstream=httpx.ASGITransport(app=create_app())) as server:
        remote = await run_transcribe(manifest, tmp_path / "remote", base_url=server.base_url,
                                      model=MODEL_NAME)
    flags = list(remote.item("music", "transcripts")["qa_flags"])
    assert flags and all(f.startswith("chunk 0: ") for f in flags), flags
