"""Who spoke when in one recording: 10 s windows -> local speakers -> single-speaker stretches
-> one embedding each -> one clustering for the whole recording -> turns.

1. 10 s windows slide by `step_s` (a multiple of 0.27 s, so every window's frames fall on one
   global grid of 16.875 ms frames, and on the 10 ms fbank grid). Each window gets up to 3
   local speakers per frame; the number of speakers in a global frame is the rounded mean of
   the counts of the windows covering it (as pyannote 3.1 does).
2. Frames with exactly one speaker form runs, cut at pauses and where at least half of the
   windows covering a frame boundary see the local speaker change. Runs shorter than 0.5 s are
   left out, longer ones split evenly into stretches of at most `chunk_s`; each stretch is
   embedded once with CAM++. Why stretches, not one embedding per (window, local speaker):
   the segmentation model often gives two speakers separated by a pause the same local label
   inside a window, which blurs such embeddings; and each second of speech is embedded once.
3. The stretches of at least 1 s are clustered (clustering.py); every stretch then takes its
   nearest cluster.
4. Each window's local speakers are mapped to global ones by a vote of their labelled frames;
   the mapped windows are aggregated as pyannote does (the `count` most active speakers per
   frame), and single-speaker frames inside a stretch take the stretch's speaker directly.

Memory: the audio is read window by window from a `Samples` source (a file), and what is kept
per window is 3 x 589 bytes of activity: a few MB per hour besides the models.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import permutations
from typing import Protocol

import numpy as np

from audiobatch.localmodel.diarization.clustering import centroids_of, cluster, l2norm
from audiobatch.localmodel.diarization.fbank import fbank
from audiobatch.localmodel.diarization.models import (EMBEDDING_DIM, FRAME_CENTER0, FRAME_STEP,
                                                      FRAMES_PER_WINDOW, LOCAL_SPEAKERS, SAMPLE_RATE,
                                                      WINDOW_SAMPLES, Embedder, Segmenter,
                                                      frame_center_s)

Turn = tuple[float, float, int]  # (start_s, end_s, speaker index from 0, in order of appearance)
GRID = 4320  # lcm(270, 160) samples = 0.27 s: windows start on both frame grids


class Samples(Protocol):
    """16 kHz mono float32 audio, read by range (an array in memory, or a file)."""

    def __len__(self) -> int: ...

    def read(self, start: int, stop: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Settings:
    """The measured defaults (docs/speakers.md: how they were chosen)."""

    step_s: float = 2.7  # window step
    batch_windows: int = 4  # windows per segmentation run: 16 cost +270 MB of arena for 6-9% less CPU
    chunk_s: float = 3.0  # longest stretch embedded at once
    min_stretch_s: float = 0.5  # shorter single-speaker runs are not embedded
    change_vote: float = 0.5  # share of windows that must see a speaker change to cut a run
    train_stretch_s: float = 1.0  # only stretches this long shape the clusters
    threshold: float = 0.55  # clustering: largest mean cosine distance merged
    min_cluster_s: float = 6.0  # clusters with less speech are absorbed
    max_train: int = 3000  # stretches clustered at most (evenly subsampled beyond)


@dataclass
class Analysis:
    """What the networks found (the expensive part), before clustering."""

    frames_per_step: int
    activity: np.ndarray  # (windows, 589, 3) uint8 local speaker activity
    count: np.ndarray  # (frames,) speakers per global frame
    stretches: np.ndarray  # (M, 2) global frame ranges [g0, g1)
    embeddings: np.ndarray  # (M, 192)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges where `mask` is true."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.where(edges == 1)[0], np.where(edges == -1)[0]))


class _Frames:
    """Per global frame: summed speaker counts, speaker-change votes and covering windows."""

    def __init__(self, n_frames: int) -> None:
        self.count_sum = np.zeros(n_frames, np.float32)
        self.change_sum = np.zeros(n_frames, np.float32)  # a change between frame g-1 and g
        self.cover = np.zeros(n_frames, np.float32)

    def add(self, first: int, activity: np.ndarray) -> None:
        span = slice(first, first + FRAMES_PER_WINDOW)
        active = activity.sum(axis=1)
        self.count_sum[span] += active
        self.cover[span] += 1.0
        speaker = np.where(active == 1, np.argmax(activity, axis=1), -1)
        changed = (speaker[1:] >= 0) & (speaker[:-1] >= 0) & (speaker[1:] != speaker[:-1])
        self.change_sum[first + 1:first + FRAMES_PER_WINDOW] += changed

    def count(self, a: int, b: int) -> np.ndarray:
        return np.rint(self.count_sum[a:b] / np.maximum(self.cover[a:b], 1))

    def vote(self, a: int, b: int) -> np.ndarray:
        return self.change_sum[a:b] / np.maximum(self.cover[a:b], 1)


class Diarizer:
    """Both networks, loaded once; `diarize(samples, num_speakers)` -> turns. Not thread-safe:
    one recording at a time (the engine holds a lock)."""

    def __init__(self, segmenter: Segmenter, embedder: Embedder, settings: Settings = Settings()) -> None:
        self.segmenter, self.embedder, self.settings = segmenter, embedder, settings

    def diarize(self, samples: Samples, num_speakers: int | None = None) -> list[Turn]:
        """Sorted turns (start_s, end_s, speaker); turns of different speakers may overlap."""
        return self.finish(self.analyze(samples), num_speakers)

    def analyze(self, samples: Samples) -> Analysis:
        """Segment every window and embed every stretch, streaming: stretches are cut and
        embedded as soon as no later window covers their frames, while the next batch of
        windows is segmented in a worker thread (onnxruntime releases the GIL)."""
        step = max(1, round(self.settings.step_s * SAMPLE_RATE / GRID)) * GRID
        k = step // FRAME_STEP
        n = len(samples)
        n_windows = 1 + int(np.ceil(max(0, n - WINDOW_SAMPLES) / step)) if n else 0
        n_frames = k * (n_windows - 1) + FRAMES_PER_WINDOW if n_windows else 0
        n_valid = int(np.sum(frame_center_s(np.arange(n_frames)) * SAMPLE_RATE < n))
        activity = np.zeros((n_windows, FRAMES_PER_WINDOW, LOCAL_SPEAKERS), np.uint8)
        frames = _Frames(n_frames)
        cutter = _StretchCutter(self.settings, frames, self._embed_stretch(samples))
        batches = range(0, n_windows, self.settings.batch_windows)

        def segment(first: int) -> np.ndarray:
            starts = range(first * step, min(n_windows, first + self.settings.batch_windows) * step, step)
            batch = np.zeros((len(starts), WINDOW_SAMPLES), np.float32)
            for i, start in enumerate(starts):
                window = samples.read(start, min(n, start + WINDOW_SAMPLES))
                batch[i, :len(window)] = window  # the last window is padded with silence
            return self.segmenter(batch)

        with ThreadPoolExecutor(max_workers=1) as worker:
            pending = worker.submit(segment, batches[0]) if n_windows else None
            for i, first in enumerate(batches):
                found = pending.result()
                if i + 1 < len(batches):
                    pending = worker.submit(segment, batches[i + 1])
                activity[first:first + len(found)] = found
                for j, window in enumerate(found):
                    frames.add((first + j) * k, window)
                last = first + len(found) - 1
                final = last == n_windows - 1
                cutter.advance(n_valid if final else min(n_valid, (last + 1) * k), final)
        count = frames.count(0, n_valid).astype(np.int64)
        return Analysis(k, activity, count, np.array(cutter.stretches, np.int64).reshape(-1, 2),
                        np.array(cutter.embeddings, np.float32).reshape(-1, EMBEDDING_DIM))

    def _embed_stretch(self, samples: Samples) -> Callable[[int, int], np.ndarray]:
        def embed(g0: int, g1: int) -> np.ndarray:
            a = max(0, FRAME_CENTER0 + FRAME_STEP * g0 - FRAME_STEP // 2)
            b = min(len(samples), FRAME_CENTER0 + FRAME_STEP * (g1 - 1) + FRAME_STEP // 2)
            features = fbank(samples.read(a, b))
            return self.embedder(features) if len(features) >= 10 else np.zeros(EMBEDDING_DIM, np.float32)
        return embed

    def finish(self, analysis: Analysis, num_speakers: int | None = None) -> list[Turn]:
        """Clustering and reconstruction (cheap) -> turns."""
        if len(analysis.activity) == 0 or len(analysis.count) == 0 or len(analysis.stretches) == 0:
            return []
        count = np.minimum(analysis.count, num_speakers) if num_speakers else analysis.count
        frame_speaker = self._stretch_speakers(analysis, num_speakers)
        mapping = _window_speakers(analysis, frame_speaker)
        n_speakers = int(frame_speaker.max()) + 1
        active = _reconstruct(analysis.activity, mapping, count, analysis.frames_per_step, n_speakers)
        direct = (frame_speaker >= 0) & (count == 1)
        active[direct] = False
        active[np.where(direct)[0], frame_speaker[direct]] = True
        return _turns(active)

    def _stretch_speakers(self, analysis: Analysis, num_speakers: int | None) -> np.ndarray:
        """The speaker of every frame inside a stretch (-1 elsewhere)."""
        s = self.settings
        x = l2norm(analysis.embeddings)
        seconds = (analysis.stretches[:, 1] - analysis.stretches[:, 0]) * FRAME_STEP / SAMPLE_RATE
        train = np.where(seconds >= s.train_stretch_s)[0]
        if len(train) < 2:
            train = np.arange(len(x))
        if len(train) > s.max_train:
            train = train[np.linspace(0, len(train) - 1, s.max_train).round().astype(np.int64)]
        labels = cluster(x[train], seconds[train], s.threshold, s.min_cluster_s, num_speakers)
        centres = l2norm(centroids_of(x[train], labels))
        nearest = np.argmax(x @ centres.T, axis=1)  # every stretch, also the short ones
        frame_speaker = np.full(len(analysis.count), -1, np.int64)
        for (g0, g1), speaker in zip(analysis.stretches, nearest):
            frame_speaker[g0:g1] = speaker
        return frame_speaker


class _StretchCutter:
    """Cuts final frames into single-speaker stretches and embeds them as they become final."""

    def __init__(self, settings: Settings, frames: _Frames, embed: Callable[[int, int], np.ndarray]) -> None:
        self.settings, self.frames, self.embed = settings, frames, embed
        self.done = 0  # frames before this are cut
        self.stretches: list[tuple[int, int]] = []
        self.embeddings: list[np.ndarray] = []

    def advance(self, frontier: int, final: bool) -> None:
        g0 = self.done
        if frontier <= g0:
            return
        single = self.frames.count(g0, frontier) == 1
        vote = self.frames.vote(g0, frontier)
        self.done = frontier
        for a, b in _runs(single):
            if b == len(single) and not final:
                self.done = g0 + a  # the run may go on past the frontier: cut it later
                break
            for s0, s1 in self._pieces(a, b, vote):
                self.stretches.append((g0 + s0, g0 + s1))
                self.embeddings.append(self.embed(g0 + s0, g0 + s1))

    def _pieces(self, a: int, b: int, vote: np.ndarray) -> list[tuple[int, int]]:
        """A run cut where the windows vote for a change (one cut per run of high votes, at the
        strongest), then split evenly into stretches of at most chunk_s."""
        s = self.settings
        cuts = [a + 1 + ca + int(np.argmax(vote[a + 1 + ca:a + 1 + cb]))
                for ca, cb in _runs(vote[a + 1:b] >= s.change_vote)]
        pieces = []
        for s0, s1 in zip([a, *cuts], [*cuts, b]):
            seconds = (s1 - s0) * FRAME_STEP / SAMPLE_RATE
            if seconds < s.min_stretch_s:
                continue
            edges = np.linspace(s0, s1, int(np.ceil(seconds / s.chunk_s)) + 1).round().astype(int)
            pieces += list(zip(edges[:-1], edges[1:]))
        return pieces


def _window_speakers(analysis: Analysis, frame_speaker: np.ndarray) -> np.ndarray:
    """(windows, 3) global speaker of each local speaker (-2: none), chosen by a vote of the
    frames labelled through stretches; two local speakers of a window never share one."""
    n_valid, k = len(analysis.count), analysis.frames_per_step
    n_speakers = int(frame_speaker.max()) + 1
    mapping = np.full((len(analysis.activity), LOCAL_SPEAKERS), -2, np.int64)
    onehot = np.zeros((n_valid + 1, n_speakers), np.float32)
    labelled = frame_speaker >= 0
    onehot[np.where(labelled)[0], frame_speaker[labelled]] = 1.0
    choices = {m: np.array(list(permutations(range(n_speakers), m)))
               for m in range(1, min(n_speakers, LOCAL_SPEAKERS) + 1)}
    for w, activity in enumerate(analysis.activity):
        g = w * k
        n = max(0, min(FRAMES_PER_WINDOW, n_valid - g))
        if n == 0:
            continue
        votes = activity[:n].astype(np.float32).T @ onehot[g:g + n]  # (3, speakers)
        local = np.where(votes.sum(1) > 0)[0]
        if len(local) == 0:
            continue
        if len(local) > n_speakers:
            mapping[w, local] = np.argmax(votes[local], axis=1)
            continue
        options = choices[len(local)]
        score = votes[local][np.arange(len(local))[None, :], options].sum(1)
        mapping[w, local] = options[int(np.argmax(score))]
    return mapping


def _reconstruct(activity: np.ndarray, mapping: np.ndarray, count: np.ndarray, k: int,
                 n_speakers: int) -> np.ndarray:
    """(frames, speakers) bool: per frame the `count` global speakers with the most summed
    activity over the windows covering it (pyannote's aggregation)."""
    n_valid = len(count)
    summed = np.zeros((n_valid, n_speakers), np.float32)
    for w in range(len(activity)):
        g = w * k
        if g >= n_valid:
            break
        n = min(FRAMES_PER_WINDOW, n_valid - g)
        for speaker in np.unique(mapping[w]):
            if speaker >= 0:
                summed[g:g + n, speaker] += activity[w, :n, mapping[w] == speaker].max(axis=0)
    order = np.argsort(-summed, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n_speakers), order.shape).copy(), axis=1)
    return (rank < count[:, None]) & (summed > 0)


def _turns(active: np.ndarray) -> list[Turn]:
    """Frames -> sorted turns; speakers renumbered in order of first appearance."""
    centres = frame_center_s(np.arange(len(active)))
    half = FRAME_STEP / SAMPLE_RATE / 2
    turns = [(float(max(0.0, centres[a] - half)), float(centres[b - 1] + half), speaker)
             for speaker in range(active.shape[1]) for a, b in _runs(active[:, speaker])]
    turns.sort(key=lambda t: (t[0], t[1]))
    order: dict[int, int] = {}
    for _, _, speaker in turns:
        order.setdefault(speaker, len(order))
    return [(start, end, order[speaker]) for start, end, speaker in turns]
