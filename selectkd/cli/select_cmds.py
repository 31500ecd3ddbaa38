"""`selectkd select` and `selectkd export`: parse arguments, call the library, print a summary.

``register(app)`` adds both commands to the main Typer app (cli/main.py).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from selectkd.cli.options import COLUMNS, RUN, CacheDirOption, ConfigOption, out, with_options
from selectkd.errors import SelectKDError, SelectKDWarning
from selectkd.specs import (DEFAULT_BINS, DEFAULT_CLUSTERS, DEFAULT_CRITERION, DEFAULT_PRUNE_HARD, DEFAULT_STRATEGY, DataSpec,
                            ScoreSpec, SelectSpec)


@with_options(COLUMNS, RUN)
def select_command(
    data: Optional[str] = typer.Option(None, "--data", help="The data scored with `selectkd score`: built-in name, save_to_disk folder, data file or hub name."),
    split: str = typer.Option("train", "--split", help="Split to select from (ignored for a single data file, which has one)."),
    teacher: List[str] = typer.Option(None, "--teacher", help="Teacher model (repeat for several), as given to `selectkd score`."),
    student: Optional[str] = typer.Option(None, "--student", help="Student model whose cached uncertainty and embeddings rank the rows."),
    strategy: str = typer.Option(DEFAULT_STRATEGY, "--strategy", help="How to rank rows (see --list). Default random: in the 10% study (docs/RESULTS.md; 3 seeds each of tweets-binary and r8, 20ng to come) no strategy beat a random 10% at equal training time on both datasets: ccs and uncertainty_sampling were level or below, confident_uncertain level on tweets and 2 points above on r8, where every 10% run is ~10 points below full KD; top-k uncertainty collapses onto one corner. The paper's criteria and these recipes stay available by name."),
    criterion: str = typer.Option(DEFAULT_CRITERION, "--criterion", help="For coverage: the strategy that ranks rows inside each cluster."),
    budget: str = typer.Option("0.1", "--budget", help="How many rows: a fraction in (0, 1] such as 0.1 (1 and 1.0 mean every row), or a whole row count >= 2 such as 300."),
    per_class: bool = typer.Option(False, "--per-class", help="Keep the pool's class proportions in the subset."),
    clusters: int = typer.Option(DEFAULT_CLUSTERS, "--clusters", help="For coverage: number of k-means clusters over the student embeddings."),
    prune_hard: float = typer.Option(DEFAULT_PRUNE_HARD, "--prune-hard", help="For ccs: the share of each class dropped first as too hard: rows the teachers confidently contradict (likely mislabelled), then those of highest teacher entropy. CCS used 0.1-0.4."),
    bins: int = typer.Option(DEFAULT_BINS, "--bins", help="For ccs: difficulty bins by teacher margin; each gets an equal share of the budget."),
    dedup: Optional[float] = typer.Option(None, "--dedup", help="Drop near-duplicates first: rows within this distance of an earlier kept row (unit embeddings, 0..2; 0.1 ~ cosine 0.995). Up to 8,192 rows every pair is compared; above that k-means lists on a 64-dimensional PCA find the candidates (approximate, bench/results/scale.md), checked on the full embeddings."),
    sample: bool = typer.Option(False, "--sample", help="Sample without replacement, p ∝ exp(standardised score / --sample-temperature), instead of taking the top rows."),
    sample_temperature: float = typer.Option(1.0, "--sample-temperature", help="With --sample: lower is closer to top-k, higher closer to random."),
    old_temperature: Optional[float] = typer.Option(None, "--temperature", hidden=True, help="Old name of --sample-temperature."),
    drop_disagreement: bool = typer.Option(False, "--drop-disagreement", help="Drop rows whose gold label the teachers confidently contradict (likely label noise)."),
    disagreement_threshold: float = typer.Option(0.9, "--disagreement-threshold", help="With --drop-disagreement: the teachers' mean probability that counts as confident."),
    seed: int = typer.Option(0, "--seed", help="Seed for random, sampling and k-means."),
    name: Optional[str] = typer.Option(None, "--name", help="Save as <cache>/selections/NAME (default: from strategy, rows and seed)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a selection of the same name."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Refuse a pool (before choosing, nothing written) that choosing would need more memory for than this (such as 8G or 512M); default: the memory available now. Selection reads the cache a part at a time: about 20 bytes a row (36 for ccs), plus ~170 a row with --dedup (bench/results/scale.md)."),
    no_compute: bool = typer.Option(False, "--no-compute", help="Fail instead of scoring when the cache lacks an entry; the error names the options that differ from the nearest cached entry."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG histogram of the score over the pool with the subset highlighted (replaces only a PNG)."),
    list_strategies: bool = typer.Option(False, "--list", help="List the strategies, one per line, and exit."),
    limit: Optional[int] = typer.Option(None, "--limit", help="As given to score: only the first N rows."),
    max_length: int = typer.Option(128, "--max-length", help="As given to score (part of the cache key)."),
    student_head: str = typer.Option("probe", "--student-head", help="As given to score: probe or as-is."),
    cls_states: bool = typer.Option(False, "--cls-states", help="As given to score (part of the teacher cache key)."),
    allow_untrained_head: bool = typer.Option(False, "--allow-untrained-head", help="As given to score (part of the teacher cache key)."),
    **shared,
) -> None:
    """Rank the scored pool by a strategy and save the top BUDGET rows as a named selection.

    Missing cache entries are scored first (as `selectkd score` would), complete ones are
    reused. The selection records the exact cache keys, every parameter and the seed.
    """
    from selectkd.selection.choose import parse_budget
    from selectkd.selection.memory import parse_size
    from selectkd.selection.report import check_plot, plot_histogram, summary
    from selectkd.selection.run import select
    from selectkd.selection.strategies import STRATEGIES

    if list_strategies:
        width = max(len(n) for n in STRATEGIES)
        for s in STRATEGIES.values():
            out.print(f"{s.name:<{width}}  {s.description}", highlight=False, soft_wrap=True)
        return
    if not data:
        raise SelectKDError("give --data (and --teacher/--student as given to `selectkd score`)")
    if plot is not None:
        check_plot(plot)
    if old_temperature is not None:
        warnings.warn("--temperature of select is now --sample-temperature; the old name will go", SelectKDWarning)
        sample_temperature = old_temperature
    t0 = time.perf_counter()
    selection = select(
        DataSpec(data, split, limit=limit, **{k: shared[k] for k in COLUMNS}),
        ScoreSpec(tuple(teacher or ()), student, max_length, cls_states=cls_states, student_head=student_head,
                  allow_untrained_head=allow_untrained_head, device=shared["device"],
                  trust_remote_code=shared["trust_remote_code"]),
        SelectSpec(strategy, parse_budget(budget), criterion, clusters, per_class=per_class, sample=sample,
                   sample_temperature=sample_temperature, drop_disagreement=drop_disagreement,
                   disagreement_threshold=disagreement_threshold, dedup=dedup, seed=seed, prune_hard=prune_hard,
                   bins=bins),
        name=name, cache_dir=shared["cache_dir"], overwrite=overwrite, no_compute=no_compute,
        progress=shared["progress"], max_memory=parse_size(max_memory) if max_memory is not None else None,
    )
    info = summary(selection)
    out.print(summary_table(info))
    if plot is not None:
        out.print(f"histogram: {plot_histogram(selection, plot)}")
    cache = selection.provenance["cache"]
    keys = ", ".join([f"student/{cache['student'][:12]}", *(f"teacher/{k[:12]}" for k in cache["teachers"])])
    out.print(f"saved selection {selection.name!r} ({len(selection):,} rows) from {keys} "
              f"in {time.perf_counter() - t0:.1f} s", highlight=False)


def summary_table(info: dict) -> Table:
    """Pool vs subset side by side: rows, class balance, score spread, clusters covered."""
    table = Table("", "pool", "subset", title=f"{info['strategy']} ({info['criterion']})")
    table.add_row("rows", f"{info['pool_rows']:,}", f"{info['subset_rows']:,}")
    for reason, n in info["dropped"].items():
        table.add_row(f"dropped: {reason.replace('_', ' ')}", f"{n:,}", "")
    for c in info["classes"]:
        table.add_row(f"class {c['label']}", f"{c['pool']:,} ({c['pool_share']:.1%})",
                      f"{c['subset']:,} ({c['subset_share']:.1%})")
    for stat in ("min", "median", "max"):
        pool, sub = info["score"]["pool"][stat], info["score"]["subset"][stat]
        table.add_row(f"score {stat}", f"{pool:.4g}", f"{sub:.4g}" if sub is not None else "-")
    if info["clusters"]:
        table.add_row("clusters covered", f"{info['clusters']['total']}", f"{info['clusters']['covered']}")
    return table


def export_command(
    selection: str = typer.Option(..., "--selection", help="Name of a saved selection (see <cache>/selections/)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="arrow, parquet, jsonl, csv or hf (save_to_disk folder); default from --out's suffix."),
    out_path: Path = typer.Option(..., "--out", help="File to write (a folder for hf); <out>.provenance.json goes beside it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier export of the same format at --out (nothing else)."),
    cache_dir: Optional[Path] = CacheDirOption,
    config: Optional[Path] = ConfigOption,
) -> None:
    """Write a selection's rows with their original columns, uid, the scores and, per teacher, logits_<teacher> and kl_<teacher>.

    A file or folder --data is read from the absolute path the selection recorded (any folder works); data changed since is refused.
    """
    from selectkd.selection.export import export

    t0 = time.perf_counter()
    path = export(selection, fmt, out_path, cache_dir=cache_dir, overwrite=overwrite)
    out.print(f"exported selection {selection!r} to {path} in {time.perf_counter() - t0:.1f} s", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `select` and `export` to ``app``."""
    app.command("select")(select_command)
    app.command("export")(export_command)
