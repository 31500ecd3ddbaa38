"""What a selection looks like: the summary table (class balance, score spread) and a histogram PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import save_figure
from ..errors import SelectKDError
from ..outputs import PNG, check_output, claim
from .saved import PoolStats, Selection
from .strategies import SelectionError


def _stats(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"min": None, "median": None, "max": None}
    return {"min": float(np.min(values)), "median": float(np.median(values)), "max": float(np.max(values))}


def summary(selection: Selection, pool: PoolStats | None = None) -> dict:
    """What a summary table shows: sizes, class balance of pool vs subset, score spread, clusters covered."""
    pool = pool or selection.pool
    if pool is None:
        raise SelectionError("summary needs the pool the selection came from (the result of `select`)")
    at = pool.at(selection.uids)
    n_classes = int(max(pool.labels.max(initial=0) + 1, len(pool.label_names or [])))
    # rows without a gold label (-1) are counted under their own name, after the classes
    pool_counts = np.bincount(np.where(pool.labels < 0, n_classes, pool.labels), minlength=n_classes + 1)
    sub = pool.labels[at]
    sub_counts = np.bincount(np.where(sub < 0, n_classes, sub), minlength=n_classes + 1)
    names = list(pool.label_names or [str(i) for i in range(n_classes)])[:n_classes] + ["(no label)"]
    classes = [{"label": names[c], "pool": int(pool_counts[c]), "pool_share": float(pool_counts[c] / len(pool)),
                "subset": int(sub_counts[c]), "subset_share": float(sub_counts[c] / max(1, len(at)))}
               for c in range(n_classes + 1) if c < n_classes or pool_counts[c]]
    result = {
        "name": selection.name,
        "strategy": selection.provenance.get("strategy"),
        "criterion": pool.criterion,
        "pool_rows": int(len(pool)),
        "eligible_rows": int(pool.eligible.sum()),
        "subset_rows": int(len(at)),
        "dropped": dict(selection.provenance.get("dropped", {})),
        "classes": classes,
        "score": {"pool": _stats(pool.scores), "subset": _stats(pool.scores[at])},
        "clusters": None,
    }
    if pool.clusters is not None:
        result["clusters"] = {"total": int(len(np.unique(pool.clusters))),
                              "covered": int(len(np.unique(pool.clusters[at])))}
    return result


def check_plot(path: str | os.PathLike) -> None:
    """Refuse a --plot path that is not free or a PNG, before any work (selectkd/outputs.py)."""
    check_output(Path(path), PNG, overwrite=True)


def plot_histogram(selection: Selection, path: str | os.PathLike, pool: PoolStats | None = None, bins: int = 50) -> Path:
    """A PNG of the criterion over the pool with the subset highlighted: shows what a strategy favours.

    An existing PNG at ``path`` is replaced; anything else there is refused (``check_plot`` says so
    before the selection is made).
    """
    pool = pool or selection.pool
    if pool is None:
        raise SelectionError("plot_histogram needs the pool the selection came from (the result of `select`)")
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend, Agg renders the PNG
    except ImportError:
        raise SelectKDError("--plot needs matplotlib; install it with `pip install 'selectkd[plot]'`") from None
    path = Path(path)
    at = pool.at(selection.uids)
    edges = np.histogram_bin_edges(pool.scores, bins=bins)
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    ax.hist(pool.scores, bins=edges, color="0.75", label=f"pool ({len(pool):,})")
    ax.hist(pool.scores[at], bins=edges, color="tab:red", alpha=0.8, label=f"subset ({len(at):,})")
    ax.set_xlabel(pool.criterion or "score")
    ax.set_ylabel("rows")
    ax.set_title(f"selection {selection.name}")
    ax.legend()
    fig.tight_layout()
    with claim(path, PNG, overwrite=True):
        save_figure(fig, path)
    return path
