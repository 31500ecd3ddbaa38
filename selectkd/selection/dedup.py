"""--dedup: the rows within a radius of an earlier kept row (unit embeddings), read a chunk of rows at a time.

Up to ``EXACT_ROWS`` rows every pair is compared (faiss range search over all of them). Above that the
search is inverted-file style with bounded memory: a faiss PCA to ``PROJECTED_DIMS`` dimensions (distances
only shrink under a projection, so no near pair is lost there) and two-level faiss k-means lists, both
trained on a seeded sample; each row is kept once, projected, in float16, in its nearest list and searches
its ``PROBES`` nearest lists; the candidate pairs are then checked on the full embeddings. A pair whose rows
share none of their searched lists is missed, so the search is approximate; bench/scale_bench.py measures
how many planted duplicates it finds (99.8% at 10M rows, bench/results/scale.md).

Why not a faiss IVF index and its range_search: at 10M x 384 the index alone (float32, or float16 with a
scalar quantizer) is over the 4 GB bound, and faiss's flat range_search per list ran 3x slower here than
one BLAS product per list block in numpy (many small searches, each with its thread start-up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .strategies import SelectionError, sample_positions

EXACT_ROWS = 1 << 13  # bench/results/scale.md: the exact search takes 0.4 s here; the lists win from ~4k rows
PROJECTED_DIMS = 64
PROBES = 3
LIST_ROWS = 512  # rows per list on average
SAMPLE_PER_LIST = 16  # k-means training rows per list
PAD = 0.01  # added to the radius in the float16 projected space (its rounding); the full check is exact
PAIR_WINDOW = 1 << 22  # candidate pairs checked at a time (their rows gathered once per window)

Chunks = Callable[[], Iterator[np.ndarray]]  # each call: the embeddings again, consecutive rows, in order


@dataclass
class Dedup:
    """Rows to drop and how they were found (``search``: exact, or the list search's settings and counts)."""

    drop: np.ndarray
    search: dict = field(default_factory=dict)


def find_near_duplicates(chunks: Chunks, n: int, radius: float, seed: int = 0,
                         exact_rows: int = EXACT_ROWS) -> Dedup:
    """Mask of rows within ``radius`` (Euclidean, unit vectors) of an earlier kept row.

    Greedy in row order, so the first row of each near-duplicate group stays (deterministic):
    |a - b| <= r  <=>  a.b >= 1 - r^2 / 2.
    """
    if not 0 <= radius <= 2:
        raise SelectionError(f"--dedup radius {radius} must be in [0, 2] (distance between unit embeddings; "
                             f"0.1 ~ cosine 0.995)")
    if n <= exact_rows:
        x = np.concatenate([np.asarray(c, dtype=np.float32) for c in chunks()]) if n else np.zeros((0, 1), np.float32)
        pairs = _exact_pairs(np.ascontiguousarray(x), radius)
        search = {"search": "exact"}
    else:
        pairs, search = _list_pairs(chunks, n, radius, seed)
    drop = _greedy(pairs, n)
    return Dedup(drop, {**search, "pairs": int(len(pairs))})


def _exact_pairs(x: np.ndarray, radius: float) -> np.ndarray:
    """(P, 2) pairs (earlier, later) of rows of ``x`` within ``radius``."""
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    found = []
    for lo in range(0, len(x), 65536):
        lims, _, hits = index.range_search(x[lo:lo + 65536], _threshold(radius))
        query = np.repeat(np.arange(lo, lo + len(lims) - 1), np.diff(lims).astype(np.int64))
        later = hits > query  # each pair once, from its earlier row
        found.append(np.stack([query[later], hits[later]], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 2), np.int64)


def _threshold(radius: float) -> float:
    return 1.0 - radius * radius / 2.0 - 1e-6


def _greedy(pairs: np.ndarray, n: int) -> np.ndarray:
    """Drop each row near an earlier row that is itself kept, in row order (pairs: earlier, later)."""
    drop = np.zeros(n, dtype=bool)
    if not len(pairs):
        return drop
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    heads, starts = np.unique(pairs[:, 0], return_index=True)
    for i, near in zip(heads, np.split(pairs[:, 1], starts[1:])):  # only rows with a later neighbour
        if not drop[i]:
            drop[near] = True
    return drop


def list_count(n: int) -> int:
    """Lists for ``n`` rows: a power of two near n / ``LIST_ROWS``, so a row is compared with ~1,000 others."""
    return int(2 ** max(round(np.log2(max(n / LIST_ROWS, 1.0))), 0))


class _Lists:
    """Two-level k-means lists: ``coarse`` cells, then k-means inside each, so assigning a row costs
    coarse + probes * fine distances instead of coarse * fine (and training is as cheap). Distances are
    numpy products: thousands of small searches run faster without faiss's threads."""

    def __init__(self, sample: np.ndarray, lists: int, seed: int):
        coarse = min(int(2 ** round(np.log2(np.sqrt(lists)))), len(sample))
        self.coarse = _kmeans(sample, coarse, seed)
        _, cell = _nearest(sample, self.coarse, 1)
        fine_per_cell = -(-lists // coarse)
        self.fine, self.offset = [], np.zeros(coarse + 1, dtype=np.int64)
        for c in range(coarse):
            members = sample[cell[:, 0] == c]
            k = min(fine_per_cell, len(members))
            self.fine.append(_kmeans(members, k, seed + c) if len(members) > k else
                             members if len(members) else self.coarse[c:c + 1])  # a cell the sample missed
            self.offset[c + 1] = self.offset[c] + len(self.fine[-1])
        self.count = int(self.offset[-1])

    def nearest(self, y: np.ndarray, probes: int) -> np.ndarray:
        """(N, probes) list ids by distance: the best ``probes`` of the ``probes`` nearest fine centroids
        inside each of the ``probes`` nearest cells (the first is a row's own list)."""
        _, cells = _nearest(y, self.coarse, probes)
        width = cells.shape[1]
        dist = np.full((len(y), width * probes), np.inf, dtype=np.float32)
        ids = np.zeros((len(y), width * probes), dtype=np.int64)
        for j in range(width):
            order = np.argsort(cells[:, j], kind="stable")
            bounds = np.searchsorted(cells[order, j], np.arange(len(self.fine) + 1))
            for c in np.flatnonzero(np.diff(bounds)):
                rows = order[bounds[c]:bounds[c + 1]]
                d, i = _nearest(y[rows], self.fine[c], probes)
                dist[rows, j * probes:j * probes + d.shape[1]] = d
                ids[rows, j * probes:j * probes + d.shape[1]] = i + self.offset[c]
        best = np.argsort(dist, axis=1, kind="stable")[:, :probes]
        out = np.take_along_axis(ids, best, axis=1)
        missing = ~np.isfinite(np.take_along_axis(dist, best, axis=1))
        out[missing] = out[:, :1].repeat(probes, axis=1)[missing]  # fewer lists than probes: search own again
        return out.astype(np.int32)


def _nearest(y: np.ndarray, centroids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(squared distances, indices) of the ``k`` nearest ``centroids`` of each row, nearest first."""
    g = y @ centroids.T - 0.5 * np.einsum("ij,ij->i", centroids, centroids)  # larger is nearer
    k = min(k, len(centroids))
    at = np.argmax(g, axis=1)[:, None] if k == 1 else np.argpartition(-g, k - 1, axis=1)[:, :k]
    near = np.take_along_axis(g, at, axis=1)
    order = np.argsort(-near, axis=1, kind="stable")
    at, near = np.take_along_axis(at, order, axis=1), np.take_along_axis(near, order, axis=1)
    return np.einsum("ij,ij->i", y, y)[:, None] - 2 * near, at


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=10, seed=seed, min_points_per_centroid=1, max_points_per_centroid=10**9)
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return km.centroids


def _list_pairs(chunks: Chunks, n: int, radius: float, seed: int) -> tuple[np.ndarray, dict]:
    import faiss

    sample = gather(chunks, sample_positions(n, max(list_count(n) * SAMPLE_PER_LIST, 4096), seed)).astype(np.float32)
    dims = sample.shape[1]
    pca = faiss.PCAMatrix(dims, min(PROJECTED_DIMS, dims, len(sample)))  # a PCA has at most as many axes as rows
    pca.train(sample)
    lists = _Lists(pca.apply(sample), list_count(n), seed)
    del sample

    projected = np.empty((n, pca.d_out), dtype=np.float16)
    probed = np.empty((n, PROBES), dtype=np.int32)
    lo = 0
    for chunk in chunks():
        for a in range(0, len(chunk), 65536):
            y = pca.apply(np.ascontiguousarray(chunk[a:a + 65536], dtype=np.float32))
            projected[lo:lo + len(y)] = y
            probed[lo:lo + len(y)] = lists.nearest(y, PROBES)
            lo += len(y)
    if lo != n:
        raise SelectionError(f"the embeddings hold {lo} rows, the pool {n}; check the cache with `selectkd cache verify`")

    members = np.argsort(probed[:, 0], kind="stable")  # rows by their own (nearest) list
    member_bounds = np.searchsorted(probed[members, 0], np.arange(lists.count + 1))
    others = probed[:, 1:].ravel()
    queries = np.argsort(others, kind="stable")  # (row, probe) slots by the other list they search
    query_bounds = np.searchsorted(others[queries], np.arange(lists.count + 1))
    queries //= max(PROBES - 1, 1)
    del probed, others
    cutoff = (radius + PAD) ** 2
    candidates = []
    for c in range(lists.count):
        mine = members[member_bounds[c]:member_bounds[c + 1]]
        if len(mine) == 0:
            continue
        asking = np.concatenate([mine, queries[query_bounds[c]:query_bounds[c + 1]]])  # its rows first
        # |q - m|^2 <= cut  <=>  q.m - |m|^2/2 >= (|q|^2 - cut)/2: one product of [q, 1] and [m, -|m|^2/2]
        m = projected[mine].astype(np.float32)
        m = np.hstack([m, -0.5 * np.einsum("ij,ij->i", m, m)[:, None]]).T.copy()
        step = max(1, (1 << 24) // len(mine))  # a block of at most 16M products
        for lo in range(0, len(asking), step):
            q = projected[asking[lo:lo + step]].astype(np.float32)
            bound = 0.5 * (np.einsum("ij,ij->i", q, q) - cutoff)
            g = np.hstack([q, np.ones((len(q), 1), dtype=np.float32)]) @ m
            own = np.arange(lo, min(lo + len(q), len(mine)))
            g[own - lo, own] = -np.inf  # a row is not its own duplicate
            near = g >= bound[:, None]
            hit = np.flatnonzero(near.any(axis=1))  # few rows have a neighbour: find them first
            if len(hit) == 0:
                continue
            qi, mi = np.nonzero(near[hit])
            a, b = asking[lo + hit[qi]], mine[mi]
            other = a != b  # a row that searches its own list again (fewer lists than probes) finds itself
            candidates.append(np.stack([np.minimum(a, b)[other], np.maximum(a, b)[other]], axis=1))
    del projected, members, queries
    pairs = np.concatenate(candidates) if candidates else np.zeros((0, 2), np.int64)
    pairs = np.unique(pairs, axis=0) if len(pairs) else pairs  # a pair two lists found
    checked = _checked(chunks, pairs, radius)
    return checked, {"search": "lists", "lists": lists.count, "probes": PROBES, "projected_dims": pca.d_out,
                     "candidate_pairs": int(len(pairs))}


def _checked(chunks: Chunks, pairs: np.ndarray, radius: float) -> np.ndarray:
    """The candidate pairs whose full embeddings are within ``radius``, a window of pairs at a time."""
    kept = []
    for lo in range(0, len(pairs), PAIR_WINDOW):
        window = pairs[lo:lo + PAIR_WINDOW]
        rows, inverse = np.unique(window, return_inverse=True)
        x = gather(chunks, rows)
        inverse = inverse.reshape(window.shape)
        dots = np.empty(len(window), dtype=np.float32)
        for a in range(0, len(window), 65536):
            i = inverse[a:a + 65536]
            dots[a:a + 65536] = np.einsum("ij,ij->i", x[i[:, 0]].astype(np.float32), x[i[:, 1]].astype(np.float32))
        kept.append(window[dots >= _threshold(radius)])
    return np.concatenate(kept) if kept else np.zeros((0, 2), np.int64)


def gather(chunks: Chunks, positions: np.ndarray) -> np.ndarray:
    """The rows at sorted ``positions``, in one pass over the chunks (their dtype)."""
    out, lo = [], 0
    for chunk in chunks():
        hi = lo + len(chunk)
        a, b = np.searchsorted(positions, [lo, hi])
        if b > a:
            out.append(np.asarray(chunk[positions[a:b] - lo]))
        lo = hi
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out)
