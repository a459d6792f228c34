"""Pause shortening and its timeline map (tasks/audio/economy.py), and prepare with economy.

The decisions and the map are pure, so they are property-tested without audio: whatever the
labels and however they arrive, speech is kept whole, only middles of long pauses go, and
every sent time maps back monotonically to the original sample it came from. The audio tests
use real speech (LJ Speech clips from ../shared/data) joined with room tone, as the shared
corpus has few long pauses of its own.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from audiobatch.tasks.audio.codecs import decode, iter_decoded
from audiobatch.tasks.audio.economy import (OFFSET_PAD_S, ONSET_PAD_S, PRESET, UNSURE_REACH_S, Economy,
                                            Keep, PauseShortener, TimeMap, economy_for, shorten_pauses)
from audiobatch.tasks.audio.pauses import frame_levels_db
from audiobatch.tasks.audio.prepare import prepare_chunks
from audiobatch.tasks.audio.vad import WINDOW_SAMPLES
from audiobatch.tasks.errors import ConfigError
from tests.helpers.data import SPEECH
from tests.helpers.e2e import Concatenation, concatenate_clips

RATE = 16_000


# --- which windows are kept (pure) --------------------------------------------------------------

def expected_kept(silent: list[bool], long: int, keep: int) -> set[int]:
    """The rule, stated directly: speech stays; a silent run of `long` windows or more keeps
    `keep` at each end; shorter runs stay whole."""
    kept, i = set(), 0
    while i < len(silent):
        j = i
        while j < len(silent) and silent[j] == silent[i]:
            j += 1
        if silent[i] and j - i >= long:
            kept |= set(range(i, i + keep)) | set(range(j - keep, j))
        else:
            kept |= set(range(i, j))
        i = j
    return kept


@st.composite
def labelled_streams(draw: st.DrawFn) -> tuple[list[bool], list[int], int, int]:
    runs = draw(st.lists(st.integers(1, 80), min_size=1, max_size=40))
    first_silent = draw(st.booleans())
    silent = [bool((k % 2 == 0) == first_silent) for k, n in enumerate(runs) for _ in range(n)]
    keep = draw(st.integers(1, 8))
    long = draw(st.integers(2 * keep + 1, 2 * keep + 40))
    cuts = sorted(draw(st.lists(st.integers(0, len(silent)), max_size=8)))
    return silent, cuts, long, keep


@given(labelled_streams())
@settings(max_examples=300, deadline=None)
def test_speech_is_kept_whole_and_only_long_pause_middles_go(stream) -> None:
    silent, cuts, long, keep = stream
    shortener = PauseShortener(long, keep)
    keeps: list[Keep] = []
    for a, b in zip([0, *cuts], [*cuts, len(silent)]):  # labels arrive in arbitrary pieces
        keeps += shortener.push(np.array(silent[a:b], dtype=bool))
        assert all(k.first >= 0 and k.end <= shortener.position for k in keeps)
    keeps += shortener.finish()
    windows = [w for k in keeps for w in range(k.first, k.end)]
    assert windows == sorted(set(windows))  # in order, never twice
    assert set(windows) == expected_kept(silent, long, keep)
    for before, after in zip(keeps, keeps[1:]):  # a splice (a gap in the windows) is faded
        assert (after.first > before.end) == before.fade_out == after.fade_in


# --- the timeline map (pure) ----------------------------------------------------------------------

@given(labelled_streams(), st.integers(0, WINDOW_SAMPLES - 1),
       st.sampled_from([1.0, 1.15, 1.25, 1.5, 2.0]), st.data())
@settings(max_examples=200, deadline=None)
def test_every_sent_time_maps_back_monotonically_to_where_it_came_from(
        stream, short_tail: int, speed: float, data: st.DataObject) -> None:
    silent, _, long, keep = stream
    total = len(silent) * WINDOW_SAMPLES - short_tail  # the last window may be partial
    shortener = PauseShortener(long, keep)
    timeline = TimeMap(RATE, speed)
    origin = []  # for each sent (shortened) sample, the original sample it is
    for k in shortener.push(np.array(silent)) + shortener.finish():
        a, b = k.first * WINDOW_SAMPLES, min(k.end * WINDOW_SAMPLES, total)
        timeline.keep(a, b - a)
        origin += range(a, b)
    timeline.finish(total)

    assert timeline.short_samples == len(origin)
    assert timeline.to_original(0.0) == 0.0
    assert timeline.to_original(timeline.sent_s) == pytest.approx(total / RATE)
    samples = data.draw(st.lists(st.integers(0, len(origin) - 1), min_size=1, max_size=50))
    for j in samples:  # the sent sample j (at j / speed in sent time) is original sample origin[j]
        assert timeline.to_original(j / RATE / speed) * RATE == pytest.approx(origin[j])
    times = np.sort(np.asarray(data.draw(st.lists(
        st.floats(-1.0, timeline.sent_s + 1.0, allow_nan=False), min_size=2, max_size=60))))
    mapped = timeline.to_original(times)
    assert np.all(np.diff(mapped) >= 0)  # monotone
    assert np.all((mapped >= 0) & (mapped <= total / RATE))  # inside the recording


def test_settings_that_make_no_sense_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="economy speed 3.0.*--economy-speed"):
        Economy(1.0, 0.3, 3.0)
    with pytest.raises(ConfigError, match="must exceed the gap"):
        Economy(0.3, 0.3)
    with pytest.raises(ConfigError, match="too short"):
        Economy(1.0, 0.01)
    assert economy_for(False) is None
    assert economy_for(True) == PRESET
    assert economy_for(False, 1.25).speed == 1.25  # --economy-speed alone turns economy on
    assert economy_for(True, 1.25, row=False) is None  # a manifest row may turn it off
    assert economy_for(False, row=True) == PRESET  # ...or on


# --- real speech with pauses ------------------------------------------------------------------------

CLIPS = [SPEECH / f"coqui-tts__LJ001-000{n}.wav" for n in (1, 2, 3, 4)]
GAPS_S = [3.0, 0.4, 6.0]  # dead air, a breath, a long silence


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Concatenation:
    return concatenate_clips(CLIPS, GAPS_S, tmp_path_factory.mktemp("economy") / "pauses.wav",
                             lead_s=2.0)


def test_pauses_are_shortened_and_every_clip_is_sent_whole(recording: Concatenation) -> None:
    economy = Economy(pause_s=0.6, gap_s=0.3)
    timeline = TimeMap(RATE)
    sent = np.concatenate(list(shorten_pauses(iter_decoded(recording.path, RATE), economy, timeline)))
    original = decode(recording.path, RATE)
    assert timeline.original_s == pytest.approx(recording.duration_s)
    assert len(sent) == timeline.short_samples
    # The 2 s lead and the 3 s and 6 s pauses shrink to the gap plus the speech pads; the 0.4 s
    # breath stays (the clips bring a little silence of their own at their edges).
    saved = len(original) / RATE - len(sent) / RATE
    kept_per_pause = economy.gap_s + ONSET_PAD_S + OFFSET_PAD_S + 0.07  # + rounding to windows
    assert 2.0 + 3.0 + 6.0 - 3 * kept_per_pause <= saved <= 2.0 + 3.0 + 6.0 + 0.5
    # Each clip's audible frames are all sent, unchanged, where the map says they came from.
    lengths = [len(decode(clip, RATE)) for clip in CLIPS]
    positions = timeline_positions(timeline)
    for start_s, n in zip(recording.starts_s, lengths):
        start = round(start_s * RATE)
        frames = frame_levels_db(original[start:start + n], 400) > -45  # 25 ms frames with sound
        for f in np.flatnonzero(frames)[:: 7]:
            position = start + f * 400
            sent_at = np.searchsorted(positions, position)
            assert timeline.to_original(sent_at / RATE) * RATE == pytest.approx(position)
            assert sent[sent_at] == original[position]
    print(f"{recording.duration_s:.1f} s recorded -> {len(sent) / RATE:.1f} s sent ({saved:.2f} s saved)")


def test_speech_the_voice_detector_misses_is_still_sent(tmp_path: Path) -> None:
    """Silero hears little of JFK's speech over a telephone line, or of a reader in a noisy,
    echoing room (tests/helpers/varied.py): on the held-out episode economy left whole
    sentences of such clips out (WER 5.5% -> 12.2%). Audio loud for its stretch of the
    recording is never a pause, whatever the detector says; nor is quiet within UNSURE_REACH_S
    of it (the embedded Whisper drops text over what Silero takes for 4 s of non-speech, and
    with those pauses shortened such stretches grew over whole telephone sentences: varied
    episodes 5.40% -> 8.19% WER with pauses only); the rest of the pauses still goes."""
    from audiobatch.tasks.audio.vad import speech_spans
    from tests.helpers.varied import noisy_room, telephone

    rng = np.random.default_rng(3)
    clips = [telephone(decode(SPEECH / "openai-whisper__jfk.flac", RATE), rng),
             noisy_room(decode(SPEECH / "coqui-tts__LJ001-0001.wav", RATE), rng)]
    tone = [np.zeros(3 * RATE, dtype=np.float32) + rng.standard_normal(3 * RATE).astype(np.float32) * 3e-4
            for _ in range(3)]
    original = np.concatenate([tone[0], clips[0], tone[1], clips[1], tone[2]]).astype(np.float32)
    starts = [3 * RATE, 6 * RATE + len(clips[0])]
    missed = 0.0  # loud seconds of the clips that the detector alone calls pauses
    for clip in clips:
        spans = speech_spans(clip)
        loud = frame_levels_db(clip, WINDOW_SAMPLES) > -35
        heard = np.zeros(loud.size, dtype=bool)
        for a, b in spans:
            heard[int(a * RATE) // WINDOW_SAMPLES:int(b * RATE) // WINDOW_SAMPLES + 1] = True
        missed += float(np.sum(loud & ~heard)) * WINDOW_SAMPLES / RATE
    assert missed > 1.0  # the detector does miss this speech: the test means something

    timeline = TimeMap(RATE)  # the shortened stream's map (before any speed-up)
    blocks = [original[i:i + 4096] for i in range(0, len(original), 4096)]
    sent = np.concatenate(list(shorten_pauses(blocks, PRESET, timeline)))
    positions = timeline_positions(timeline)
    for start, clip in zip(starts, clips):
        loud = np.flatnonzero(frame_levels_db(clip, 160) > -35)  # 10 ms frames with sound
        assert np.isin(start + loud * 160, positions).all()  # every one of them sent
    # The telephone clip begins and ends with words the detector misses, the noisy room with
    # babble it does not take for speech: the pauses beside those are sent UNSURE_REACH_S deep.
    reach = round(UNSURE_REACH_S * RATE)
    after_phone = starts[0] + len(clips[0])
    beside = np.r_[starts[0] - reach:starts[0], after_phone:after_phone + reach,
                   starts[1] - reach:starts[1]]
    assert np.isin(beside, positions).all()
    # the rest of the pauses went, but for what is kept of each (0.45 s and the pads)
    shortenable_s = 3 * 3.0 - 4 * UNSURE_REACH_S
    assert len(original) / RATE - len(sent) / RATE > shortenable_s - 3 * 0.8


def timeline_positions(timeline: TimeMap) -> np.ndarray:
    """The original sample index of every sent sample (speed 1)."""
    return np.round(timeline.to_original(np.arange(timeline.short_samples) / RATE) * RATE)


def test_prepare_packs_shortened_sped_up_speech_and_keeps_the_original_times(
        recording: Concatenation, tmp_path: Path) -> None:
    economy = Economy(pause_s=0.6, gap_s=0.3, speed=1.25)
    prepared = prepare_chunks(recording.path, tmp_path, max_chunk_s=12.0, label="pauses",
                              economy=economy)
    plain = prepare_chunks(recording.path, tmp_path / "plain", max_chunk_s=12.0, label="pauses")
    assert prepared.duration_s == pytest.approx(recording.duration_s)
    assert len(prepared.chunks) < len(plain.chunks)  # more speech per request
    sent = 0.0
    for chunk in prepared.chunks:
        seconds = sf.info(chunk.path).frames / RATE
        assert seconds == pytest.approx(chunk.duration_s, abs=1e-3) and seconds <= 12.0
        sent += seconds
    assert sent == pytest.approx(prepared.sent_s, abs=0.01)
    assert sent < 0.8 * recording.duration_s
    # The chunks' places in the recording tile it, in order, from 0 to the end.
    edges = [(c.source_start_s, c.source_end_s) for c in prepared.chunks]
    assert edges[0][0] == 0.0 and edges[-1][1] == pytest.approx(recording.duration_s)
    assert all(a[1] == b[0] for a, b in zip(edges, edges[1:]))
    assert sum(c.recorded_s for c in prepared.chunks) == pytest.approx(recording.duration_s)
    # A clip's first sound in the sent audio maps back to its start in the recording.
    for start_s in recording.starts_s:
        sent_start = np.searchsorted(timeline_sent_starts(prepared), start_s)
        assert prepared.to_original(sent_start / 100) == pytest.approx(start_s, abs=0.03)


def timeline_sent_starts(prepared) -> np.ndarray:
    """The original time of every 10 ms of sent audio (for finding where a time was sent)."""
    return np.asarray([prepared.to_original(t / 100) for t in range(int(prepared.sent_s * 100) + 1)])


def test_a_manifest_row_may_turn_economy_on_or_off_and_a_bad_value_fails_only_that_row(
        tmp_path: Path) -> None:
    """Manifests may come from others (inbox, submit): the column takes yes/no words only."""
    from audiobatch.tasks.inputs.manifest import TRANSCRIBE, read_manifest

    manifest = tmp_path / "m.csv"
    manifest.write_text("id,audio,economy\non,a.wav,yes\noff,b.wav,False\nbad,c.wav,1.5x; rm -rf\n"
                        "unset,d.wav,\n", encoding="utf-8")
    items = {item.item_id: item for item in read_manifest(manifest, TRANSCRIBE)}
    assert items["on"].options["economy"] is True and items["off"].options["economy"] is False
    assert "economy" not in items["unset"].options and items["unset"].error is None
    assert items["bad"].error == "row 4: economy '1.5x; rm -rf' is not a yes/no value: write true or false."
    assert economy_for(True, row=items["off"].options["economy"]) is None


@pytest.mark.parametrize("command", ["estimate", "transcribe"])
def test_a_speed_out_of_range_stops_before_anything_runs(command: str, tmp_path: Path) -> None:
    """In its own process: the CLI sets up logging for the process it runs in."""
    import subprocess
    import sys

    manifest = tmp_path / "m.csv"
    manifest.write_text(f"audio\n{SPEECH / CLIPS[0].name}\n", encoding="utf-8")
    out = ["--out", str(tmp_path / "o")] if command == "transcribe" else []
    done = subprocess.run([sys.executable, "-m", "audiobatch.flows.cli", command, str(manifest),
                           "--economy-speed", "5", *out], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--economy-speed" in done.stderr and "2" in done.stderr
    assert not (tmp_path / "o").exists()
