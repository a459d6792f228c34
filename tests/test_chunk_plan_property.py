"""Properties of the chunk planner (tasks.audio.pauses via tasks.audio.prepare), on synthetic frame levels.

No audio here: the planner is pure, so random recordings are described by their 25 ms frame
levels (speech frames between -34 and -10 dBFS, pause frames below -62 dBFS) and checked for
what a user relies on: no request over the token budget, chunks that tile the recording
exactly (or overlap by exactly the configured amount), and cuts inside pauses.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from audiobatch.tasks.audio.pauses import CutRules, Span, frame_levels_db
from audiobatch.tasks.audio.prepare import PREPARE_RATE, chunk_rules, max_chunk_seconds, plan_cuts
from audiobatch.tasks.errors import ConfigError

RATE = PREPARE_RATE
PAUSE_DB = -50.0  # ground truth for these tests: every frame below this is a pause frame


def synthetic_levels(n_frames: int, seed: int, mean_speech: float, mean_pause: float) -> np.ndarray:
    """Alternating speech and pause runs with geometric lengths (means in frames)."""
    rng = np.random.default_rng(seed)
    n_runs = int(n_frames / (mean_speech + mean_pause)) * 2 + 8
    speech_runs = rng.geometric(1.0 / mean_speech, n_runs)
    pause_runs = rng.geometric(1.0 / mean_pause, n_runs)
    while speech_runs.sum() + pause_runs.sum() < n_frames:  # rare: runs came out short
        speech_runs, pause_runs = speech_runs * 2, pause_runs * 2
    lengths = np.column_stack([speech_runs, pause_runs]).reshape(-1)
    is_pause = np.repeat(np.tile([False, True], n_runs), lengths)[:n_frames]
    return np.where(is_pause, rng.uniform(-95.0, -62.0, n_frames), rng.uniform(-34.0, -10.0, n_frames))


@st.composite
def recordings(draw: st.DrawFn) -> dict:
    duration_s = draw(st.one_of(st.floats(0.1, 120.0), st.floats(120.0, 4 * 3600.0),
                                st.sampled_from([0.1, 1.0, 4 * 3600.0])))
    tokens_per_s = draw(st.one_of(st.sampled_from([10.0, 20.0]), st.floats(1.0, 60.0)))
    budget = draw(st.one_of(st.sampled_from([50, 300, 4096]), st.integers(11, 20000)))
    # long recordings with tiny budgets mean thousands of chunks: keep each example fast
    assume(duration_s * tokens_per_s / budget < 6000)
    return dict(
        duration_s=duration_s, tokens_per_s=tokens_per_s, budget=budget,
        overlap_s=draw(st.one_of(st.just(0.0), st.floats(0.05, 3.0))),
        window_s=draw(st.floats(0.1, 40.0)),
        seed=draw(st.integers(0, 2**32 - 1)),
        mean_speech=draw(st.floats(2.0, 4000.0)),  # frames: 50 ms .. 100 s of speech
        mean_pause=draw(st.floats(1.0, 60.0)),
    )


def pause_boundaries(levels: np.ndarray, first: int, limit: int, min_frames: int) -> set[int]:
    """Frame boundaries k that lie inside a pause (frames k-1 and k quiet), seeing only
    frames first..limit-1 and pauses at least min_frames long."""
    quiet = np.concatenate(([False], levels[first:limit] < PAUSE_DB, [False]))
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    inside: set[int] = set()
    for a, b in zip(edges[::2], edges[1::2]):
        if b - a >= min_frames:
            inside.update(range(first + a + 1, first + b))
    return inside


def check_plan(spans: list[Span], total: int, rules: CutRules, budget: int, tokens_per_s: float,
               levels: np.ndarray) -> None:
    assert spans, "a non-empty recording gives at least one chunk"
    assert spans[0].start == 0 and spans[-1].end == total
    for span in spans:
        tokens = math.ceil((span.end - span.start) / RATE * tokens_per_s)
        assert 0 < span.end - span.start <= rules.max_chunk_samples
        assert tokens <= budget, f"chunk {span} needs {tokens} tokens > budget {budget}"
    for before, after in zip(spans, spans[1:]):
        assert after.start == before.end - rules.overlap_samples  # no gap, exact overlap
        assert after.start > before.start
    frame = rules.frame_samples
    for span in spans[:-1]:
        first = -(-span.start // frame)
        limit = (span.start + rules.max_chunk_samples) // frame
        earliest = limit - rules.window_samples // frame
        assert span.end % frame == 0
        cut = span.end // frame
        assert earliest <= cut <= limit, "cut outside the search window"
        inside = pause_boundaries(levels, first, limit, rules.min_pause_frames)
        if inside & set(range(earliest, limit)):
            assert cut in inside, f"{span}: a pause lies in the window but the cut is in speech"
            assert span.cut == "pause"
        else:
            assert span.cut == "quietest"
            window = levels[earliest - 1:limit]
            pair = window[:-1] + window[1:]
            assert levels[cut - 1] + levels[cut] == pytest.approx(pair.min())
    assert spans[-1].cut == "end"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recordings())
def test_plans_fit_the_budget_tile_the_audio_and_cut_in_pauses(rec: dict) -> None:
    max_chunk_s = max_chunk_seconds(rec["budget"], rec["tokens_per_s"])
    try:
        rules = chunk_rules(max_chunk_s, RATE, rec["window_s"], rec["overlap_s"])
    except ConfigError:
        # only budgets too small for half a second of new audio per chunk are refused
        assert max_chunk_s - rec["overlap_s"] < 0.5 + 0.05
        return
    total = max(1, round(rec["duration_s"] * RATE))
    levels = synthetic_levels(total // rules.frame_samples, rec["seed"], rec["mean_speech"],
                              rec["mean_pause"])
    spans = plan_cuts(levels, total, rules)
    check_plan(spans, total, rules, rec["budget"], rec["tokens_per_s"], levels)
    if rec["overlap_s"] == 0:
        assert sum(s.end - s.start for s in spans) == total


@settings(max_examples=200, deadline=None)
@given(budget=st.integers(1, 100_000), tokens_per_s=st.floats(0.01, 1000.0),
       margin=st.integers(0, 50))
def test_max_chunk_seconds_is_the_longest_chunk_within_budget(budget: int, tokens_per_s: float,
                                                              margin: int) -> None:
    if budget - margin < 1:
        with pytest.raises(ConfigError, match="budget"):
            max_chunk_seconds(budget, tokens_per_s, margin)
        return
    seconds = max_chunk_seconds(budget, tokens_per_s, margin)
    assert math.ceil(seconds * tokens_per_s) <= budget - margin
    # a hundredth of a token longer would no longer fit
    assert math.ceil((seconds + 0.01 / tokens_per_s) * tokens_per_s) > budget - margin


def test_default_budget_gives_about_409_s_and_300_tokens_about_30_s() -> None:
    assert 405 < max_chunk_seconds(4096, 10) <= 409.6
    assert 28 < max_chunk_seconds(300, 10) <= 30


def rules_30s() -> CutRules:
    return chunk_rules(30.0, RATE, search_window_s=8.0)


def test_longest_pause_in_the_window_wins_and_the_cut_is_in_its_middle() -> None:
    rules = rules_30s()
    levels = np.full(60 * 40, -20.0)  # 60 s of speech at 25 ms frames
    levels[1000:1008] = -80.0  # 0.2 s pause at 25 s (inside the window 22..30 s)
    levels[1100:1130] = -70.0  # 0.75 s pause at 27.5 s: the longest in the window
    levels[1190:1199] = -90.0  # 0.225 s pause near the limit
    spans = plan_cuts(levels, len(levels) * rules.frame_samples, rules)
    assert spans[0].cut == "pause"
    assert spans[0].end == 1115 * rules.frame_samples


def test_pause_before_the_window_is_not_used() -> None:
    rules = rules_30s()
    levels = np.full(60 * 40, -20.0)
    levels[400:480] = -80.0  # a 2 s pause at 10 s: before the window, so not a candidate
    levels[1150] = -40.0  # the quietest moment in the window (continuous speech otherwise)
    spans = plan_cuts(levels, len(levels) * rules.frame_samples, rules)
    assert spans[0].cut == "quietest"
    assert spans[0].end // rules.frame_samples in (1150, 1151)


def test_plan_from_real_levels_matches_the_streaming_rules() -> None:
    """frame_levels_db on a real signal feeds plan_cuts; silence between tones becomes the cut."""
    rng = np.random.default_rng(1)
    tone = 0.3 * np.sin(np.arange(RATE * 9) * 2 * np.pi * 220 / RATE).astype(np.float32)
    gap = (rng.standard_normal(RATE // 2) * 1e-4).astype(np.float32)
    signal = np.concatenate([tone, gap] * 5)
    rules = chunk_rules(20.0, RATE, search_window_s=8.0)
    spans = plan_cuts(frame_levels_db(signal, rules.frame_samples), len(signal), rules)
    gaps = [((i + 1) * 9 * RATE + i * RATE // 2, (i + 1) * (9 * RATE + RATE // 2)) for i in range(5)]
    for span in spans[:-1]:
        assert any(lo < span.end < hi for lo, hi in gaps), f"cut {span} not in a gap"
