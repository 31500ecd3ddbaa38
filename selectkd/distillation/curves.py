"""Time-to-accuracy curves: dev accuracy against cumulative training seconds for `selectkd distill` runs.

``read_curve(run_dir)`` turns one run folder into points; ``plot_curves`` draws several runs on one
PNG (one line per run, labelled by the folder name), optionally against a reference run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import SelectKDError
from ..outputs import PNG, check_output, claim

PNG_OUT = replace(PNG, option="--out")  # `plot --out`, not `select --plot`
REFERENCE_FRACTION = 0.15  # the time mark drawn for --reference: 15% of its training seconds


class RunError(SelectKDError):
    """A folder given as a run cannot be read as one."""


@dataclass(frozen=True)
class Curve:
    name: str  # the run folder's name: the line's label
    seconds: list[float]  # cumulative training seconds at each evaluation
    accuracy: list[float]  # dev accuracy there
    train_seconds: float | None  # summary.json's seconds.train (None while the run is unfinished)


def json_lines(path: Path) -> list[dict]:
    """The JSON objects of a .jsonl file (metrics.jsonl), blank lines skipped; a broken line is one RunError."""
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise RunError(f"{path} line {n} is not JSON; re-run `selectkd distill` for this run") from None
            if isinstance(row, dict):
                rows.append(row)
    return rows


def read_curve(run_dir: str | os.PathLike) -> Curve:
    """The (seconds, dev accuracy) points of one run, in the order they were logged.

    A row with ``"seconds_train"`` (cumulative training seconds, logged by ``--eval-every`` and after
    every epoch) is used as is. An older per-epoch row without it is placed at ``seconds.train * step / steps`` from summary.json:
    training time is assumed to grow linearly with steps. Without summary.json (an unfinished run)
    such rows are skipped.
    """
    run = Path(run_dir)
    if not (run / "config.json").is_file() or not (run / "metrics.jsonl").is_file():
        raise RunError(f"{run} is not a run folder (no config.json and metrics.jsonl); "
                       f"give a folder made by `selectkd distill --out`")
    summary = {}
    if (run / "summary.json").is_file():
        try:
            summary = json.loads((run / "summary.json").read_text())
        except json.JSONDecodeError:
            raise RunError(f"{run}/summary.json is not JSON; re-run `selectkd distill` for this run") from None
    train = (summary.get("seconds") or {}).get("train")
    steps = summary.get("steps")
    points = []
    dev_rows = 0
    for row in json_lines(run / "metrics.jsonl"):
        acc = (row.get("dev") or {}).get("accuracy") if isinstance(row.get("dev"), dict) else None
        if acc is None:
            continue
        dev_rows += 1
        seconds = row.get("seconds_train", row.get("seconds"))
        if seconds is not None:
            points.append((float(seconds), float(acc)))
        elif train is not None and steps and row.get("step") is not None:
            points.append((float(train) * float(row["step"]) / float(steps), float(acc)))
    if not dev_rows:
        raise RunError(f"{run} has no dev accuracy in metrics.jsonl; run `selectkd distill` with dev data "
                       f"(a dev split, --eval-data or --holdout above 0) to plot it")
    points.sort(key=lambda p: p[0])
    return Curve(run.resolve().name, [p[0] for p in points], [p[1] for p in points],
                 float(train) if train is not None else None)


def final_accuracy(curve: Curve) -> float:
    """The run's last logged dev accuracy (the reference line)."""
    return curve.accuracy[-1]


def accuracy_at(curve: Curve, seconds: float) -> float | None:
    """The dev accuracy the run had after ``seconds`` of training: its last point at or before then
    (what stopping there would give); None when it had not been evaluated by then."""
    before = [a for s, a in zip(curve.seconds, curve.accuracy) if s <= seconds + 1e-9]
    return before[-1] if before else None


def seconds_to_reach(curve: Curve, accuracy: float) -> float | None:
    """The training seconds at the run's first point with dev accuracy >= ``accuracy``; None if it never did."""
    return next((s for s, a in zip(curve.seconds, curve.accuracy) if a >= accuracy - 1e-9), None)


def time_to_accuracy(run: Curve, full: Curve, fraction: float = REFERENCE_FRACTION, share: float = 0.99) -> dict:
    """The two headline figures of a subset ``run`` against a ``full``-data run, from their dev curves:
    its accuracy at ``fraction`` of the full run's training seconds, and the seconds it needs to reach
    ``share`` of the full run's final accuracy (None: not within the run)."""
    mark = fraction * (full.train_seconds or full.seconds[-1])
    target = share * final_accuracy(full)
    return {"full_final_dev_accuracy": final_accuracy(full), "mark_seconds": round(mark, 2),
            "dev_accuracy_at_mark": accuracy_at(run, mark), "target_dev_accuracy": round(target, 4),
            "seconds_to_target": seconds_to_reach(run, target)}


def check_plot_out(path: str | os.PathLike) -> None:
    """Refuse an --out that is not free or a PNG, before reading any run."""
    check_output(Path(path), PNG_OUT, overwrite=True)


def plot_curves(runs: list[str | os.PathLike], path: str | os.PathLike,
                reference: str | os.PathLike | None = None) -> Path:
    """A PNG of dev accuracy against cumulative training seconds, one line per run.

    With ``reference``, that run's final dev accuracy is a horizontal dashed line and 15% of its
    training seconds a vertical dotted one: a run reaching the corner above-left matched it in
    15% of the time.
    """
    if not runs:
        raise RunError("no RUN_DIR given; pass one or more folders made by `selectkd distill --out`")
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend, Agg renders the PNG
    except ImportError:
        raise SelectKDError("plot needs matplotlib; install it with `pip install 'selectkd[plot]'`") from None
    from ..atomic import save_figure

    path = Path(path)
    curves = [read_curve(r) for r in runs]
    ref = read_curve(reference) if reference is not None else None
    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    for c in curves:
        ax.plot(c.seconds, c.accuracy, marker="o", markersize=3, label=c.name)
    if ref is not None:
        ax.axhline(final_accuracy(ref), color="0.3", linestyle="--", linewidth=1,
                   label=f"{ref.name} final ({final_accuracy(ref):.3f})")
        if ref.train_seconds:
            mark = REFERENCE_FRACTION * ref.train_seconds
            ax.axvline(mark, color="0.3", linestyle=":", linewidth=1,
                       label=f"{REFERENCE_FRACTION:.0%} of {ref.name}'s time ({mark:.0f} s)")
    ax.set_xlabel("cumulative training seconds")
    ax.set_ylabel("dev accuracy")
    ax.set_title("time to accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    with claim(path, PNG_OUT, overwrite=True):
        save_figure(fig, path)
    return path
