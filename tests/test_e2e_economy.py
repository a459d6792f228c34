"""`--economy` end to end: the real `transcribe-manifest` flow, embedded model, Prefect API.

The shared speech corpus has few long pauses, so the recordings with pauses are built from
its real speech (tests/helpers/pauses.py): the 23 short English clips as a "conversation" and
the 171 s reading as a "lecture", joined with room tone in pauses of 0.3-8 s — the recordings
benchmarks/economy.py chose the preset on. One default run and one economy run of them are
compared: audio tokens sent, WER, segment times on the recordings' own timeline, the
estimate, and the summary and `costs` columns.
"""
from __future__ import annotations

import pytest
import pytest_asyncio

from audiobatch.tasks.reports.progress import RunSummary
from audiobatch.tasks.run.context import RunOptions
from tests.helpers.e2e import RunResult, corpus_wer, run_transcribe, write_manifest
from tests.helpers.pauses import Recording, conversation, lecture, start_errors

pytestmark = [pytest.mark.e2e, pytest.mark.slow,  # two runs on 384 s of speech: ~2 min
              pytest.mark.usefixtures("prefect_api")]

GPT_AUDIO_IN_USD = 32 / 1e6  # gpt-audio-1.5, per audio token in; 10 tokens per second


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Recording]:
    folder = tmp_path_factory.mktemp("pauses")
    made = [conversation(folder), lecture(folder)]
    return {r.path.stem: r for r in made}


@pytest.fixture(scope="module")
def manifest(recordings: dict[str, Recording], tmp_path_factory: pytest.TempPathFactory):
    rows = [{"id": item_id, "audio": str(r.path)} for item_id, r in recordings.items()]
    return write_manifest(tmp_path_factory.mktemp("manifest") / "m.csv", rows)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def default_run(prefect_api: None, manifest, tmp_path_factory) -> RunResult:
    # the baseline for tokens and WER, and for caption timing where alignment itself is off
    return await run_transcribe(manifest, tmp_path_factory.mktemp("default"), price_as="gpt-audio-1.5")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def economy_run(prefect_api: None, manifest, tmp_path_factory) -> RunResult:
    return await run_transcribe(manifest, tmp_path_factory.mktemp("economy"), price_as="gpt-audio-1.5",
                                economy=True)


def tokens_sent(run: RunResult, first_pass: bool = False) -> int:
    costs = run.dataset("costs")
    if first_pass:
        costs = costs[costs["reask_reason"].isna()]
    return int(costs["prompt_audio_tokens"].sum())


def wer(run: RunResult, recordings: dict[str, Recording]) -> float:
    transcripts = run.dataset("transcripts")
    said = dict(zip(transcripts["item_id"], transcripts["text"]))
    return corpus_wer([r.reference for r in recordings.values()], [said[i] for i in recordings])


def test_economy_sends_a_seventh_fewer_tokens_for_the_same_words(
        default_run: RunResult, economy_run: RunResult, recordings: dict[str, Recording]) -> None:
    # first passes: QA may re-ask a whole recording either way (its cost, not economy's)
    default, economy = tokens_sent(default_run, first_pass=True), tokens_sent(economy_run, first_pass=True)
    print(f"audio tokens on first passes: default {default}, economy {economy} "
          f"({1 - economy / default:.1%} fewer); WER default {wer(default_run, recordings):.2%}, "
          f"economy {wer(economy_run, recordings):.2%}")
    assert economy <= 6 / 7 * default  # the preset (pauses of 1 s or more): 16.6% fewer
    # Issue 24's bar: half a point (the preset: 3.74% -> 3.59%; it also holds on the plain clips
    # and the varied episodes of tests/helpers/varied.py, benchmarks/economy.py).
    assert wer(economy_run, recordings) <= wer(default_run, recordings) + 0.005


def segment_starts(run: RunResult, item_id: str) -> list[float]:
    segments = run.dataset("segments")
    mine = segments[segments["item_id"] == item_id].sort_values("segment_index")
    return mine["start_s"].tolist()


def test_segments_stay_on_the_recordings_timeline(economy_run: RunResult, default_run: RunResult,
                                                  recordings: dict[str, Recording]) -> None:
    """After every pause of a second or more (those economy shortens), a segment starts within
    0.5 s of where the speech resumes in the recording - not where it lies in the sent audio,
    where the later pieces come half a minute earlier. The lecture (one clean reader) holds this
    everywhere; in the conversation of 23 clips with mixed noise floors the caption timer
    (levels and text lengths) may misplace one or two short clips, as it does by default."""
    lecture, talk = recordings["lecture"], recordings["conversation"]
    starts = segment_starts(economy_run, "lecture")
    assert starts == sorted(starts) and max(starts) < lecture.duration_s
    errors = start_errors(starts, lecture)
    default = start_errors(segment_starts(default_run, "lecture"), lecture)
    print(f"lecture: segment starts after {len(errors)} shortened pauses, largest error "
          f"{max(errors):.3f} s (default {max(default):.3f} s)")
    # within 0.5 s (0.17-0.33 s on 2026-12-07, economy and default alike). One piece may slip
    # to 1.5 s: before words stayed in the stretch where they start after a pause
    # (tasks/captions/words.py `_stretch_for`), "Basle" after a 4.7 s pause went 1.17 s late,
    # on one CPU by default too, on another only with economy; the fix is untried on the
    # first. A time left on the sent audio's timeline would put the later pieces 25 s off.
    assert len(errors) == len(default) >= 10
    assert sum(error > 0.5 for error in errors) <= 1 and max(errors) <= 1.5
    talk_errors = start_errors(segment_starts(economy_run, "conversation"), talk)
    within = sum(error <= 0.5 for error in talk_errors)
    print(f"conversation: {within} of {len(talk_errors)} within 0.5 s")
    assert within >= 0.8 * len(talk_errors)
    costs = economy_run.dataset("costs")
    sent_s = costs.loc[costs["item_id"] == "lecture", "sent_audio_s"].sum()
    assert lecture.duration_s - sent_s > 25  # in the sent audio the last pieces come that much earlier


def test_estimate_predicts_the_economy_run_within_ten_percent(economy_run: RunResult,
                                                              manifest) -> None:
    from audiobatch.flows.estimate import estimate, forecast

    options = RunOptions(kind="transcribe", manifest=str(manifest), economy=True)
    predicted = sum(f.usage.prompt_audio_tokens for f in forecast(options)[0])
    sent = tokens_sent(economy_run)
    print(f"estimate {predicted} audio tokens, run sent {sent}")
    assert abs(predicted - sent) <= 0.1 * sent
    assert "pauses heard in 2 of 2 files" in estimate(options)


def test_summary_and_costs_show_audio_recorded_vs_sent_and_dollars_saved(
        economy_run: RunResult, default_run: RunResult, recordings: dict[str, Recording]) -> None:
    summary, costs = economy_run.summary, economy_run.dataset("costs")
    recorded_s = sum(r.duration_s for r in recordings.values())
    assert costs["recorded_audio_s"].sum() == pytest.approx(recorded_s, abs=0.01)
    assert costs["sent_audio_s"].sum() == pytest.approx(costs["prompt_audio_tokens"].sum() / 10, abs=2)
    assert summary["sent_audio_s"] == pytest.approx(costs["sent_audio_s"].sum())
    unsent_s = recorded_s - summary["sent_audio_s"]
    assert summary["saved_usd"] == pytest.approx(unsent_s * 10 * GPT_AUDIO_IN_USD, rel=0.01)
    assert costs["saved_usd"].sum() == pytest.approx(summary["saved_usd"])
    shown = {row["what"]: row["value"] for row in RunSummary(**summary).rows()}
    assert shown["audio seconds"] == (f"{recorded_s:,.1f} recorded, {summary['sent_audio_s']:,.1f} "
                                      f"sent ({unsent_s / recorded_s:.0%} fewer)")
    assert "gpt-audio-1.5" in summary["priced_as"]
    assert shown[f"saved by economy ({summary['priced_as']})"] == f"${summary['saved_usd']:.4f}"
    assert default_run.summary["saved_usd"] == 0.0
    assert (default_run.dataset("costs")["saved_usd"] == 0.0).all()
