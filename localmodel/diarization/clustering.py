"""Speaker clustering of stretch embeddings: duration-weighted average-linkage agglomerative
clustering on cosine distance, in numpy.

Why average linkage: embeddings of short stretches are noisy; two same-speaker stretches can be
as far apart as the centroids of two different speakers, so a centroid-distance threshold
either merges speakers or leaves singletons. The mean pairwise distance does not depend on the
clusters' sizes and separates them (measured: docs/speakers.md).
"""
from __future__ import annotations

import numpy as np


def l2norm(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def centroids_of(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.stack([x[labels == k].mean(0) for k in range(int(labels.max()) + 1)])


def _merges(x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The dendrogram of unit rows `x`: (pairs of cluster ids (n-1, 2), heights (n-1,)); ids
    follow scipy (0..n-1 leaves, n+k the k-th merge). Weighted UPGMA by the Lance-Williams
    update on a dense distance matrix, with each row's nearest neighbour cached: O(n^2)."""
    n = len(x)
    size = weights.astype(np.float64).copy()
    distance = (1.0 - x @ x.T).astype(np.float32)
    np.fill_diagonal(distance, np.inf)
    active = np.ones(n, bool)
    slot_id = np.arange(n)
    nearest = np.argmin(distance, axis=1)
    nearest_d = distance[np.arange(n), nearest].astype(np.float64)
    pairs, heights = np.zeros((n - 1, 2), np.int64), np.zeros(n - 1)
    for k in range(n - 1):
        a = int(np.argmin(nearest_d))
        b = int(nearest[a])
        pairs[k], heights[k] = sorted((slot_id[a], slot_id[b])), nearest_d[a]
        row = ((size[a] * distance[a].astype(np.float64) + size[b] * distance[b])
               / (size[a] + size[b])).astype(np.float32)
        size[a] += size[b]
        slot_id[a], active[b] = n + k, False
        row[[a, b]] = np.inf
        row[~active] = np.inf
        distance[b, :] = distance[:, b] = np.inf
        nearest_d[b] = np.inf
        distance[a, :] = distance[:, a] = row
        if k == n - 2:
            break
        nearest[a] = int(np.argmin(distance[a]))
        nearest_d[a] = distance[a, nearest[a]]
        stale = np.where(active & ((nearest == a) | (nearest == b)))[0]
        for r in stale[stale != a]:
            nearest[r] = int(np.argmin(distance[r]))
            nearest_d[r] = distance[r, nearest[r]]
        closer = active & (row < nearest_d)
        closer[a] = False
        nearest[closer], nearest_d[closer] = a, row[closer]
    return pairs, heights


def _labels_after(n: int, pairs: np.ndarray, applied: np.ndarray) -> np.ndarray:
    """Flat labels 0..K-1 once the merges flagged in `applied` are made (union-find)."""
    parent = np.arange(2 * n - 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for k, (a, b) in enumerate(pairs):
        if applied[k]:
            parent[root(a)] = parent[root(b)] = n + k
    return np.unique([root(i) for i in range(n)], return_inverse=True)[1]


def _large_counts(n: int, pairs: np.ndarray, weights: np.ndarray, min_size: float) -> np.ndarray:
    """How many clusters of at least `min_size` exist after the first k merges, k = 0..n-1."""
    size = np.concatenate([weights, np.zeros(n - 1)])
    large = int((weights >= min_size).sum())
    counts = [large]
    for k, (a, b) in enumerate(pairs):
        size[n + k] = size[a] + size[b]
        large += int(size[n + k] >= min_size) - int(size[a] >= min_size) - int(size[b] >= min_size)
        counts.append(large)
    return np.array(counts)


def _absorb_small(x: np.ndarray, labels: np.ndarray, weights: np.ndarray, min_size: float) -> np.ndarray:
    """Clusters with less than `min_size` (seconds of speech) join the nearest large one: a
    few stray seconds are rarely a speaker of their own."""
    found = np.unique(labels)
    totals = np.array([weights[labels == k].sum() for k in found])
    large, small = found[totals >= min_size], found[totals < min_size]
    if len(large) == 0:
        return np.zeros_like(labels)
    centres = l2norm(np.stack([x[labels == k].mean(0) for k in large]))
    for k in small:
        labels[labels == k] = large[int(np.argmax(centres @ l2norm(x[labels == k].mean(0))))]
    return np.unique(labels, return_inverse=True)[1]


def cluster(x: np.ndarray, weights: np.ndarray, threshold: float, min_size: float,
            num_clusters: int | None = None) -> np.ndarray:
    """Labels 0..K-1 of embeddings `x` (n, d) weighted by `weights` (seconds of speech).

    Merges stop at `threshold` (mean cosine distance); with `num_clusters` the dendrogram is
    cut instead where that many clusters of at least `min_size` remain (the nearest count
    when none does). Small clusters are then absorbed (_absorb_small).
    """
    x = l2norm(np.asarray(x, np.float64))
    n = len(x)
    if n == 1 or num_clusters == 1:
        return np.zeros(n, np.int64)
    weights = np.asarray(weights, np.float64)
    min_size = min(min_size, 0.5 * weights.sum())
    pairs, heights = _merges(x, weights)
    below = np.zeros(2 * n - 1)
    applied = np.zeros(n - 1, bool)
    for k, (a, b) in enumerate(pairs):  # a merge applies when its whole subtree is below threshold
        below[n + k] = max(heights[k], below[a], below[b])
        applied[k] = below[n + k] <= threshold
    if num_clusters is not None:
        large = _large_counts(n, pairs, weights, min_size)
        made = int(applied.sum())
        labels = _labels_after(n, pairs, applied)
        if int((np.bincount(labels, weights=weights) >= min_size).sum()) != num_clusters:
            gap = np.abs(large - num_clusters)
            closest = np.where(gap == gap.min())[0]
            cut = int(closest[np.argmin(np.abs(closest - made))])
            applied = np.arange(n - 1) < cut
    return _absorb_small(x, _labels_after(n, pairs, applied), weights, min_size)
