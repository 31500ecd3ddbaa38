"""`selectkd distill`: parse the options into the specs of a DistillConfig and run it."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from selectkd.cli.options import COLUMNS, RUN, out, with_options
from selectkd.specs import (DEFAULT_BINS, DEFAULT_CRITERION, DEFAULT_HEAD_INIT, DEFAULT_KD_LOSS, DEFAULT_LR,
                            DEFAULT_MIN_STEPS, DEFAULT_PRUNE_HARD, DEFAULT_RESELECT_EVERY, DEFAULT_STRATEGY,
                            DEFAULT_TEMPERATURE)


def register(app: typer.Typer) -> None:
    @app.command()
    @with_options(COLUMNS, RUN)
    def distill(
        data: str = typer.Option(..., "--data", help="Training data: built-in name, save_to_disk folder, data file or hub name."),
        teacher: List[str] = typer.Option(..., "--teacher", help="Teacher (repeat for several). Its logits come from the cache; missing ones are scored first."),
        student: str = typer.Option(..., "--student", help="Student model to train (built-in name, HF folder or hub name)."),
        out_dir: Path = typer.Option(..., "--out", help="RUN_DIR: config.json, metrics.jsonl, checkpoint/, student/ (a normal HF folder), summary.json; rows/ (the rows of each choice) with --budget."),
        split: str = typer.Option("train", "--split", help="Training split (ignored for a single data file, which has one)."),
        eval_data: Optional[str] = typer.Option(None, "--eval-data", help="Dev data (default: the dataset's dev split)."),
        test_data: Optional[str] = typer.Option(None, "--test-data", help="Test data (default: the dataset's test split)."),
        limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N training rows."),
        eval_limit: Optional[int] = typer.Option(None, "--eval-limit", help="Use the first N dev rows (0: no dev evaluation)."),
        holdout: float = typer.Option(0.1, "--holdout", help="With no dev data (no --eval-data and no dev split): hold out this fraction of the training rows, seeded and stratified, as dev; they are never trained on. 0: train on every row, no dev evaluation."),
        test_limit: Optional[int] = typer.Option(None, "--test-limit", help="Use the first N test rows (0: no test evaluation)."),
        selection: Optional[str] = typer.Option(None, "--selection", help="Static: train on a saved selection (`selectkd select --name`)."),
        budget: Optional[str] = typer.Option(None, "--budget", help="Dynamic: a fraction in (0, 1] such as 0.1 (1: every row) or a whole row count >= 2; re-selected with the current student every --reselect-every epochs (0: chosen once). Each choice is kept as RUN_DIR/rows/epoch-NNN.arrow (uid, label)."),
        strategy: str = typer.Option(DEFAULT_STRATEGY, "--strategy", help="Dynamic selection strategy (see `selectkd select --list`); the same default as select."),
        criterion: str = typer.Option(DEFAULT_CRITERION, "--criterion", help="Coverage's ranking inside clusters; in-batch mode's criterion (entropy, margin, least_confidence, kl, random)."),
        clusters: int = typer.Option(30, "--clusters", help="Coverage: k-means clusters."),
        per_class: bool = typer.Option(False, "--per-class", help="Keep class proportions when selecting."),
        prune_hard: float = typer.Option(DEFAULT_PRUNE_HARD, "--prune-hard", help="ccs: the share of each class dropped first as too hard (confident teacher contradictions, then highest teacher entropy)."),
        bins: int = typer.Option(DEFAULT_BINS, "--bins", help="ccs: difficulty bins by teacher margin, each an equal share of the budget."),
        sample: bool = typer.Option(False, "--sample", help="Sample in proportion to uncertainty instead of taking the top k."),
        sample_temperature: float = typer.Option(1.0, "--sample-temperature", help="Temperature of --sample."),
        reselect_every: int = typer.Option(DEFAULT_RESELECT_EVERY, "--reselect-every", help="With --budget: re-select with the current student every K epochs (random re-draws for free); 0: never, the first choice (made from the cached scores, as `select` makes it) trains every epoch."),
        rescore_pool: float = typer.Option(1.0, "--rescore-pool", help="Dynamic: re-score only this random fraction of the pool (re-scoring all rows can cost more than training on 10%)."),
        rescore_by: str = typer.Option("random", "--rescore-by", help="With --rescore-pool < 1: random rows, or the same fraction of every k-means cluster of the student embeddings (cluster)."),
        in_batch: Optional[float] = typer.Option(None, "--in-batch", help="The paper's mode: CE on every row, KD on this top fraction of each batch by the student's uncertainty."),
        kd_loss: str = typer.Option(DEFAULT_KD_LOSS, "--kd-loss", help="kl: T^2 * KL(teacher || student) at --temperature (measured best with a fine-tuned teacher); mse: MSE between raw logits (the paper's reference code)."),
        temperature: float = typer.Option(DEFAULT_TEMPERATURE, "--temperature", help="Temperature of the KL loss."),
        ce_alpha: float = typer.Option(1.0, "--ce-alpha", help="Weight of cross-entropy on gold labels."),
        kd_alpha: float = typer.Option(1.0, "--kd-alpha", help="Weight of the KD term."),
        adoption: Optional[str] = typer.Option(None, "--adoption", help="Two teachers: hard | soft | soft-instance. Uncertain rows learn from the smaller teacher, confident ones from the larger; weights detached."),
        objective: str = typer.Option("none", "--objective", help="none | uncertainty | uncertainty-r: weigh KD by (1-u) and hidden alignment by u per row (-r reverses)."),
        pt_alpha: float = typer.Option(0.0, "--pt-alpha", help="Weight of hidden-state alignment ([CLS] of every mapped layer, from the cache)."),
        live_teacher: bool = typer.Option(False, "--live-teacher", help="Run the teacher live for token-level alignment (padding masked) instead of cached [CLS] states."),
        epochs: int = typer.Option(3, "--epochs", help="Epochs (ignored with --max-steps)."),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Train exactly N optimizer steps instead of --epochs epochs: epochs repeat over the training rows as needed (an epoch is still when rows are re-selected and a checkpoint saved); the warm-up and decay run over these N steps, reaching lr 0 at the last."),
        time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Stop once the training seconds (summary.json seconds.train: the probe head and a dynamic run's re-scoring count, evaluation does not) reach this many; summary.json then says \"stopped\": \"time budget\". The learning rate warms up and decays by time as well as by steps, reaching 0 when the budget runs out (or at the last step, if that comes first). Compare a subset with the full data at equal compute: --time-budget of the subset run's seconds."),
        min_steps: int = typer.Option(DEFAULT_MIN_STEPS, "--min-steps", help="Without --max-steps, add epochs until the run has at least this many steps: a 10% subset makes a few dozen steps an epoch, too few to leave the majority class. 0: exactly --epochs."),
        head_init: str = typer.Option(DEFAULT_HEAD_INIT, "--head-init", help="probe: before training, fit the student's classification head to the teachers' soft labels on the features it reads (linear probe, then fine-tune); random: the fresh head transformers draws; auto: probe when the student trains on a subset (--budget, --selection), random on all rows (full data, --in-batch), each where it measured better with a 3-layer MiniLM student (bench/results/head_init.md)."),
        eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Every N steps (and once at step 0, the head before training), one line in metrics.jsonl: step, training seconds so far, student rows trained so far, dev accuracy and macro-F1 (its time is not counted as training); `selectkd plot` draws them. At most the run's step count."),
        lr: float = typer.Option(DEFAULT_LR, "--lr", help="Peak learning rate (AdamW, linear warm-up then decay). BERT's usual 2e-5 left small students (MiniLM, 3-6 layers) at the majority class. Against 1e-4 on the study's tweets and 20ng (its first, 3-layer MiniLM student), 3 seeds each, 3e-4 gave the default 10% run +1.9 and +7.8 points and full-data KD -0.1 and +3.7 (bench/results/lr.md)."),
        batch_size: int = typer.Option(32, "--batch-size", help="Rows per step."),
        max_length: int = typer.Option(128, "--max-length", help="Truncate to this many tokens, at most what the models' position embeddings hold (the cache key uses it too)."),
        warmup: float = typer.Option(0.1, "--warmup", help="Fraction of steps for linear warm-up."),
        seed: int = typer.Option(0, "--seed", help="Random seed: batches, dropout, selection."),
        checkpoint: bool = typer.Option(True, "--checkpoint/--no-checkpoint", help="Save a checkpoint after every epoch (what --resume needs); off saves ~1 s per epoch on short runs."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace the distill run in --out (only a run: a folder of other files is refused)."),
        allow_untrained_head: bool = typer.Option(False, "--allow-untrained-head", help="As given to score: the teachers were scored with an untrained head (part of the teacher cache key)."),
        **shared,
    ) -> None:
        """Train a student from cached teacher logits: static, dynamic or in-batch selection, or full-data KD.

        Every epoch: dev accuracy and macro-F1 into RUN_DIR/metrics.jsonl and a checkpoint
        (`--resume` continues to the same result). At the end: test scores, the student as a
        normal HF folder, and where the time went.
        """
        from selectkd.distillation.config import DistillConfig
        from selectkd.distillation.loop import distill as run
        from selectkd.selection.choose import parse_budget
        from selectkd.specs import DataSpec, ScoreSpec, SelectSpec, TrainSpec

        cfg = DistillConfig(
            data=DataSpec(data, split, limit=limit, **{k: shared[k] for k in COLUMNS}),
            scoring=ScoreSpec(teachers=tuple(teacher), student=student, max_length=max_length, cls_states=pt_alpha > 0 and not live_teacher,
                              allow_untrained_head=allow_untrained_head, device=shared["device"],
                              trust_remote_code=shared["trust_remote_code"]),
            out=str(out_dir),
            train=TrainSpec(epochs=epochs, lr=lr, batch_size=batch_size, warmup=warmup, seed=seed, kd_loss=kd_loss,
                            temperature=temperature, ce_alpha=ce_alpha, kd_alpha=kd_alpha, adoption=adoption,
                            objective=objective, pt_alpha=pt_alpha, live_teacher=live_teacher, checkpoint=checkpoint,
                            holdout=holdout, max_steps=max_steps, time_budget=time_budget, eval_every=eval_every,
                            min_steps=min_steps, head_init=head_init),
            selecting=SelectSpec(strategy=strategy, budget=parse_budget(budget), criterion=criterion, clusters=clusters,
                                 per_class=per_class, sample=sample, sample_temperature=sample_temperature,
                                 seed=seed, prune_hard=prune_hard, bins=bins) if budget else None,
            selection=selection, in_batch=in_batch, in_batch_criterion=criterion, reselect_every=reselect_every,
            rescore_pool=rescore_pool, rescore_by=rescore_by, eval_data=eval_data, test_data=test_data,
            eval_limit=eval_limit, test_limit=test_limit, cache_dir=str(shared["cache_dir"]) if shared["cache_dir"] else None)
        res = run(cfg, resume=resume, overwrite=overwrite, progress=shared["progress"])
        print_summary(res)


def print_summary(res) -> None:
    """The run's scores, its time and its model forwards, as a table (rank 0 only: the others have no summary)."""
    s = res.summary
    if not s:  # under torchrun, rank 0 reports
        return
    table = Table("", "value")
    if s["best_dev"]:
        table.add_row("best dev accuracy / macro-F1", f"{s['best_dev']['accuracy']:.4f} / {s['best_dev']['macro_f1']:.4f} (epoch {s['best_dev']['epoch']})")
    if s["test"]:
        table.add_row("test accuracy / macro-F1", f"{s['test']['accuracy']:.4f} / {s['test']['macro_f1']:.4f}")
    else:
        table.add_row("test accuracy", "none: no --test-data and no test split")
    secs = s["seconds"]
    table.add_row("wall time", f"{s['wall_seconds']:.1f} s (train {secs['train']:.1f}, of which re-scoring {secs['rescore']:.1f}; eval {secs['eval']:.1f})")
    table.add_row("student rows fwd+bwd / fwd only", f"{s['student_rows_forward_backward']:,} / {s['student_rows_forward_only']:,}")
    table.add_row("teacher forwards", f"{s['teacher_forwards']:,}" + (" (all from the cache)" if not s["teacher_forwards"] else ""))
    out.print(table)
    out.print(f"dev rows: {dev_source(s.get('dev') or {})}", highlight=False)
    if s.get("one_class"):
        c = s["one_class"]
        out.print(f"[bold red]one class:[/] the student predicts {c['class']!r} for {c['share']:.0%} of the {c['rows']} rows "
                  f"(a majority-class result, not a model)")
    out.print(f"student saved to {res.out / 'student'}")


def dev_source(dev: dict) -> str:
    """Where the dev numbers come from, in words: a held-out part of the training rows is said plainly."""
    if dev.get("holdout"):
        of_selection = dev.get("selection_rows_held_out")
        note = f" ({of_selection:,} of them from the selection)" if of_selection else ""
        return (f"held out {dev['holdout']:.0%} of the training rows ({dev['held_out_rows']:,}) as dev{note}, seeded "
                f"and stratified, not trained on; --eval-data to use your own")
    if not dev.get("rows"):
        return "none: no dev evaluation ran (no --eval-data and no dev split, or --eval-limit 0 / --holdout 0)"
    return f"{dev['rows']:,} from {dev['data']} ({dev['split']})"
