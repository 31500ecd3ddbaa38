"""The distillation trainer: a student learns from its teachers' cached signals, in one readable loop.

Read ``distill`` top to bottom: checks -> data and teacher signals (one score() call) -> the student ->
which rows train and the optimiser -> the epoch loop (rows, steps, dev, checkpoint) -> test and summary.
No HF Trainer. The pieces it reads: config, signals, losses, active, evaluate, checkpoint.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from .. import parallel
from .._version import __version__
from ..atomic import atomic_write_json, clean_stale, replacing
from ..cache.gc import register_run
from ..cache.store import Store
from ..data.rows import Rows, load_rows
from ..errors import SelectKDError, SelectKDWarning
from ..metrics import classification_metrics
from ..models import check_max_length, load_classifier, load_tokenizer, resolve, save_model
from ..outputs import RUN, check_output
from ..runtime import _autocast, numeric_mode, pick_device, progress_bar
from ..scoring.tokens import length_batches
from ..specs import TrainSpec
from .active import ActiveSet, Dynamic, InBatch
from .checkpoint import RunState, kept, load_checkpoint, save_checkpoint
from .config import DistillConfig, check_config, prepare_run_dir, run_config
from .evaluate import Encoded, pool_scores, predictions
from .losses import LossInputs, check_finite, total_loss
from .signals import Alignment, TeacherSignal, _score, cached_signals, live_signal


@dataclass
class DistillResult:
    out: Path
    best_dev: dict
    test: dict | None
    summary: dict = field(default_factory=dict)


def distill(cfg: DistillConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> DistillResult:
    """Train ``cfg.scoring.student`` from ``cfg.scoring.teachers`` on ``cfg.data``; write RUN_DIR ``cfg.out``."""
    import torch

    t_start = time.perf_counter()
    check_config(cfg)
    t, out, root = cfg.train, Path(cfg.out), Store(cfg.cache_dir).root
    config = run_config(cfg)
    if not resume:
        check_output(out, RUN, overwrite, root)  # refused before any work; checked again when the run starts
    rank, world, device = parallel.setup(pick_device(cfg.scoring.device))
    progress = progress and rank == 0
    state, ckpt = RunState(), out / "checkpoint"
    student_ref = resolve(cfg.scoring.student, root, cfg.scoring.trust_remote_code)
    check_max_length(student_ref, cfg.scoring.max_length)
    saved_selection = _load_selection(root, cfg.selection)

    # -- data and teacher signals: one score() call finds (or fills) every cache entry and loads the rows
    scoring = replace(cfg.scoring, cls_states=t.pt_alpha > 0 and not t.live_teacher,
                      student=cfg.scoring.student if cfg.selecting else None)  # the student's scores: dynamic only
    scored = _score(cfg.data, scoring, cfg.cache_dir, progress)
    data = run_data(cfg, scored.rows, config["holdout"], root)
    rows, labels = data.rows, data.rows.labels
    tokenizer, _ = load_tokenizer(student_ref)
    tokens = Encoded.of(tokenizer, rows, cfg.scoring.max_length)
    signals = cached_signals(scored, list(cfg.scoring.teachers), rows.uids)
    if t.adoption:  # the smaller teacher takes the uncertain rows
        signals.sort(key=lambda s: s.num_parameters)
    if t.live_teacher:
        signals[0] = live_signal(signals[0], cfg.scoring, root, rows, tokenizer, tokens.ids, device)

    # -- the student -------------------------------------------------------------------------------
    torch.manual_seed(t.seed)
    student, _ = load_classifier(student_ref, rows.num_labels, allow_untrained_head=True, role="student", seed=t.seed)
    student.to(device)
    model = student  # what the step calls: the student itself, or its DDP wrapper
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(student, device_ids=[device] if device.startswith("cuda") else None)
    align = Alignment(signals[0], student.config, device) if t.pt_alpha > 0 else None
    proj = align.proj if align else None

    # -- which rows train, and the optimiser (steps known up front: every mode keeps its size) --------
    scores = partial(pool_scores, student, tokens, num_labels=rows.num_labels, device=device, rank=rank, world=world)
    active = active_rows(cfg, data, saved_selection, scored, signals, scores, state.counters)
    steps_per_epoch = math.ceil(active.size / t.batch_size) // world  # each rank takes every world-th batch
    if steps_per_epoch < 1:
        raise SelectKDError(f"{active.size} training rows make fewer batches than processes ({world}); lower --batch-size")
    total_steps = run_steps(t, steps_per_epoch)  # what the schedule decays over (and what --max-steps trains)
    epochs = math.ceil(total_steps / steps_per_epoch)
    clock = TrainClock()
    if t.eval_every is not None:  # refused before the run folder is made
        if t.eval_every > total_steps:
            raise SelectKDError(f"--eval-every {t.eval_every} is more than the run's {total_steps} steps "
                                f"({steps_per_epoch} per epoch); give at most {total_steps}")
        if data.dev is None:
            raise SelectKDError("--eval-every logs dev scores but this run has no dev rows; give --eval-data or --holdout > 0")
    params = list(student.parameters()) + (list(proj.parameters()) if proj is not None else [])
    opt, sched = optimizer(params, t, total_steps, clock)

    # -- a new run folder, or the checkpoint to resume from ------------------------------------------
    if rank == 0:
        prepare_run_dir(out, config, resume, overwrite, root)
        # `selectkd cache gc` keeps the entries a run reads while its folder exists
        register_run(root, out, [sig.key for sig in signals], scored.student.key if scored.student else None)
    parallel.barrier(world)
    if resume and not load_checkpoint(ckpt, state, student, proj, opt, sched):
        (out / "metrics.jsonl").unlink(missing_ok=True)  # killed before the first checkpoint: start over
    active.restore(state.active, state.selected_epoch)
    if t.head_init == "probe" and state.step == 0:  # a resumed run has its head from the checkpoint
        t0 = time.perf_counter()
        state.head = probe_head(student, tokens, active.head_rows(), signals, rows.num_labels, device, t.seed)
        state.times["head_init"] = time.perf_counter() - t0
        state.times["train"] += state.times["head_init"]  # part of what the run pays to train
    step = Step(model, opt, params, t, device, signals, sched, align, active, world, state.counters,
                lambda loss, norm: check_finite(loss, norm, state.step + 1, state.epoch + 1, lambda: kept(ckpt, state)))
    dev_tokens = Encoded.of(tokenizer, data.dev, cfg.scoring.max_length) if data.dev is not None else None
    if t.eval_every is not None and state.step == 0:  # where the curve starts: the (probe-fitted) head, untrained
        eval_point(state, student, dev_tokens, data, rows.num_labels, device, out, rank, state.times["train"])

    # -- the epoch loop (--max-steps: as many epochs as its steps need, the last one cut short) ----------
    stopped = "max steps" if t.max_steps is not None else "epochs"
    for epoch in range(state.epoch, epochs):
        if t.time_budget is not None and state.times["train"] >= t.time_budget:
            stopped = "time budget"  # resumed after the budget was spent
            break
        t0 = time.perf_counter()
        train_rows = active.rows_for_epoch(epoch)  # dynamic: re-scored and re-chosen here
        rescored = time.perf_counter() - t0
        state.times["rescore"] += rescored
        state.times["train"] += rescored  # what dynamic selection pays to train, like the probe head: counted in
        # seconds.train, --time-budget and the dev curve, so that it compares with static runs at equal compute
        chosen_now = isinstance(active, Dynamic) and active.selected_epoch == epoch
        if chosen_now and rank == 0:  # the rows a dynamic run trains on, as it chooses them (not timed)
            save_rows(out, epoch, rows.uids[train_rows], labels[train_rows])
        clock.start(state.times["train"])  # --eval-every's evaluation pauses it: not training time
        torch.manual_seed(t.seed + epoch)  # dropout: the same whether resumed or not
        losses = []
        batches = epoch_batches(tokens.lengths, train_rows, t.batch_size, t.seed + epoch)[rank::world]
        batches = batches[:min(steps_per_epoch, total_steps - state.step)]
        with progress_bar(f"epoch {epoch + 1}/{epochs}", sum(map(len, batches)), progress) as advance:
            for b in batches:
                losses.append(step(tokens.inputs(b, device), torch.from_numpy(labels[b]).to(device), b))
                state.step += 1
                advance(len(b))
                if t.eval_every is not None and state.step % t.eval_every == 0:
                    clock.pause(eval_point(state, student, dev_tokens, data, rows.num_labels, device, out, rank,
                                           clock.seconds()))
                if t.time_budget is not None and state.step < total_steps and over_budget(clock.seconds(), t.time_budget, world):
                    stopped = "time budget"
                    break
        state.times["train"] = clock.seconds()
        t0 = time.perf_counter()
        record = {"epoch": epoch + 1, "step": state.step, "train_loss": round(float(np.mean(losses)), 5),
                  "train_rows": int(len(train_rows)), "train_classes": class_counts(labels[train_rows], rows),
                  "seconds_train": round(state.times["train"], 4), "student_rows_trained": state.counters["train_rows"]}
        if chosen_now:
            record["rows_file"] = rows_file(epoch)
        if dev_tokens is not None and rank == 0:
            record["dev"] = evaluate(student, dev_tokens, data.dev, rows.num_labels, device, state.counters)
            state.dev_top_class = record["dev"].pop("top_class")
            if state.best_dev is None or record["dev"]["accuracy"] > state.best_dev["accuracy"]:
                state.best_dev = {**record["dev"], "epoch": epoch + 1}
        state.times["eval"] += time.perf_counter() - t0
        state.epoch, state.active, state.selected_epoch = epoch + 1, train_rows.tolist(), active.selected_epoch
        if rank == 0:  # metrics and checkpoints from rank 0; the others wait for them
            log(out, record)
            if t.checkpoint:
                save_checkpoint(ckpt, state, student, proj, opt, sched)
        parallel.barrier(world)
        if stopped == "time budget":
            break

    # -- test, the student, the summary (rank 0) -----------------------------------------------------
    if rank != 0:
        parallel.barrier(world)
        return DistillResult(out, state.best_dev or {}, None, {})
    test_metrics, test_top = None, None
    if data.test is not None:
        t0 = time.perf_counter()
        test_tokens = Encoded.of(tokenizer, data.test, cfg.scoring.max_length)
        test_metrics = evaluate(student, test_tokens, data.test, rows.num_labels, device, state.counters)
        test_top = test_metrics.pop("top_class")
        state.times["eval"] += time.perf_counter() - t0
        log(out, {"final": True, "test": test_metrics})
    save_student(out / "student", student, tokenizer, rows.label_names)
    summary = {**run_summary(state, test_metrics, signals, data, time.perf_counter() - t_start), "stopped": stopped,
               "device": device, "numerics": numeric_mode(device),  # where it ran: a GPU's bf16 gives other numbers
               "lr_at_end": round(sched.get_last_lr()[0], 10), "one_class": one_class(state.dev_top_class or test_top, rows.label_names,
                                                       "dev" if state.dev_top_class else "test")}
    if summary["one_class"]:
        warnings.warn(one_class_message(summary["one_class"], t.head_init), SelectKDWarning, stacklevel=2)
    atomic_write_json(out / "summary.json", summary)
    parallel.barrier(world)
    return DistillResult(out, state.best_dev or {}, test_metrics, summary)


# -- the step -----------------------------------------------------------------------------------------

@dataclass
class Step:
    """One optimisation step on a batch: forward, the loss terms, backward, clip, check, update.

    ``bench/distill_bench.py`` times this same step (cached KD, a live teacher, or no teacher at all).
    """

    model: object  # the student, or its DDP wrapper
    opt: object
    params: list
    spec: TrainSpec
    device: str
    signals: list[TeacherSignal]
    sched: object | None = None
    align: Alignment | None = None
    active: ActiveSet | None = None  # in-batch mode chooses the rows that get KD
    world: int = 1
    counters: dict = field(default_factory=lambda: {"train_rows": 0, "teacher_forwards": 0})
    check: Callable = lambda loss, grad_norm: None  # raises before a non-finite update

    def __call__(self, inputs: dict, labels, rows: np.ndarray) -> float:
        import torch

        self.model.train()
        with _autocast(self.device):
            out = self.model(**inputs, output_hidden_states=self.align is not None)
        teacher_logits = [s.logits(rows) for s in self.signals]
        x = LossInputs(out.logits.float(), labels, [torch.from_numpy(z).to(self.device) for z in teacher_logits])
        if self.active is not None:
            x.kd_keep = self.active.kd_mask(x.student_logits, teacher_logits)
        if self.align is not None:
            x.student_states, x.teacher_states, x.mask = self.align.pair(out.hidden_states, inputs["attention_mask"], rows)
            self.counters["teacher_forwards"] += len(rows) * self.align.signal.forwards_per_row
        loss = total_loss(x, self.spec)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.world > 1 and self.align is not None and self.align.proj is not None:
            import torch.distributed as dist  # the projection lives outside DDP: average its gradients by hand

            for p in self.align.proj.parameters():
                dist.all_reduce(p.grad)
                p.grad /= self.world
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, 1.0)  # DDP averaged the gradients: ranks agree
        self.check(loss.detach(), grad_norm)
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        self.counters["train_rows"] += len(rows) * self.world  # every rank steps on a batch of its own
        return float(loss.detach())


def run_steps(spec: TrainSpec, steps_per_epoch: int) -> int:
    """The steps the run trains and the schedule decays over: --max-steps when given, else every step of
    --epochs epochs, with epochs added until there are at least --min-steps (a 10% subset of a few
    thousand rows makes a few dozen steps an epoch: too few updates to leave the majority class).
    """
    if spec.max_steps is not None:
        return spec.max_steps
    return steps_per_epoch * max(spec.epochs, math.ceil(spec.min_steps / steps_per_epoch))


@dataclass
class TrainClock:
    """Training seconds so far: the run's earlier epochs (also when resumed) plus this epoch's, less the
    pauses for --eval-every's evaluation. The schedule reads it to decay by --time-budget."""

    before: float = 0.0
    started: float | None = None
    paused: float = 0.0

    def start(self, before: float) -> None:
        self.before, self.started, self.paused = before, time.perf_counter(), 0.0

    def pause(self, seconds: float) -> None:
        self.paused += seconds

    def seconds(self) -> float:
        return self.before + (time.perf_counter() - self.started - self.paused if self.started is not None else 0.0)


def over_budget(train_seconds: float, budget: float, world: int) -> bool:
    """Whether the training seconds reached ``budget``: rank 0's clock decides for every rank."""
    return bool(parallel.broadcast(train_seconds >= budget, world))


def eval_point(state: RunState, student, dev_tokens: Encoded, data: RunData, num_labels: int, device: str,
               out: Path, rank: int, train_seconds: float) -> float:
    """--eval-every: one metrics.jsonl line (step, training seconds and rows so far, dev scores) from rank 0;
    returns the seconds it took (counted as eval, not training)."""
    t0 = time.perf_counter()
    if rank == 0:
        dev = evaluate(student, dev_tokens, data.dev, num_labels, device, state.counters)
        log(out, {"step": state.step, "seconds_train": round(train_seconds, 4),
                  "student_rows_trained": state.counters["train_rows"],
                  "dev": {"accuracy": dev["accuracy"], "macro_f1": dev["macro_f1"]}})
    spent = time.perf_counter() - t0
    state.times["eval"] += spent
    return spent


def optimizer(params: list, spec: TrainSpec, total_steps: int, clock: TrainClock | None = None):
    """AdamW with linear warm-up over ``spec.warmup`` of the run, then linear decay to zero at its end."""
    import torch

    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.01)
    seconds = clock.seconds if clock is not None else (lambda: 0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total_steps, spec.warmup, seconds(), spec.time_budget))
    return opt, sched


def lr_factor(step: int, total_steps: int, warmup: float, seconds: float = 0.0, budget: float | None = None) -> float:
    """The learning rate's share of its peak after ``step`` steps and ``seconds`` of training.

    Linear warm-up over ``warmup`` of the run, then linear decay reaching 0 at its end: the end is step
    ``total_steps``, or with a time ``budget`` whichever comes first, the steps or the seconds, so a run
    cut by --time-budget still decays to (about) 0 at its last step.
    """
    warm = max(1, int(warmup * total_steps))
    ramp = (step + 1) / warm
    decay = max(0.0, (total_steps - step) / max(1, total_steps - warm))
    if budget is not None:
        ramp = max(ramp, seconds / (warmup * budget)) if warmup > 0 else 1.0
        decay = min(decay, max(0.0, (budget - seconds) / (budget * (1 - min(warmup, 0.99)))))
    return min(1.0, ramp, decay)


def epoch_batches(lengths: np.ndarray, rows: np.ndarray, batch_size: int, seed: int) -> list[np.ndarray]:
    """The epoch's batches of ``rows``: grouped by length, in a seeded random order."""
    groups = [rows[g] for g in length_batches(lengths[rows], batch_size)]
    order = np.random.default_rng(seed).permutation(len(groups))
    return [groups[i] for i in order]


# -- data, rows, results --------------------------------------------------------------------------------

@dataclass
class RunData:
    """The training rows (all of them: the teacher cache covers them, by uid), the positions trained
    on (all but a held-out dev part), and the dev and test rows."""

    rows: Rows
    train: np.ndarray
    dev: Rows | None
    test: Rows | None
    dev_source: dict


def _eval_rows(cfg: DistillConfig, data: str | None, split: str, limit: int | None, root: Path,
               train: Rows) -> Rows | None:
    """Dev or test rows, their labels mapped by the training rows' names (None: no such data)."""
    from ..data.sources import has_split

    if data is None and not has_split(cfg.data.data, split, root):
        return None
    if limit == 0:  # --eval-limit 0 / --test-limit 0: skip that evaluation
        return None
    names = tuple(train.label_names) if train.label_names else None
    spec = replace(cfg.data, data=data or cfg.data.data, split=split, limit=limit, label_names=names)
    return load_rows(spec, root, num_labels=train.num_labels)


def run_data(cfg: DistillConfig, rows: Rows, holdout: float, root: Path) -> RunData:
    """The dev and test rows beside the training ``rows``; with ``holdout`` > 0 (no other dev data), a
    seeded stratified dev part of the training rows that is never trained on."""
    from ..data.holdout import hold_out_dev

    test = _eval_rows(cfg, cfg.test_data, cfg.test_split, cfg.test_limit, root, rows)
    if not holdout:
        dev = _eval_rows(cfg, cfg.eval_data, cfg.eval_split, cfg.eval_limit, root, rows)
        source = {"data": cfg.eval_data or cfg.data.data, "split": cfg.eval_split} if dev is not None else {}
        return RunData(rows, np.arange(len(rows)), dev, test, {**source, "rows": len(dev) if dev is not None else 0})
    train, dev, source = hold_out_dev(rows, holdout, cfg.train.seed, cfg.eval_limit)
    return RunData(rows, train, dev, test, source)


def _load_selection(root: Path, name: str | None):
    """The saved selection of static mode, read (and refused if damaged or missing) before any work."""
    from ..selection.saved import load_selection

    return load_selection(root, name) if name else None


def active_rows(cfg: DistillConfig, data: RunData, selection, scored, signals: list[TeacherSignal],
                student_scores: Callable, counters: dict) -> ActiveSet:
    """The run's ActiveSet: a saved selection, dynamic selection, in-batch KD, or every training row."""
    from ..selection.pool import positions_of

    rows, pool = data.rows, data.train  # the training pool: every row but a held-out dev part
    if selection is not None:
        made_from = selection.provenance.get("data", {})
        if made_from.get("fingerprint") != rows.fingerprint or made_from.get("split") != cfg.data.split:
            raise SelectKDError(f"selection {cfg.selection!r} was made from other data or split than --data "
                                f"{cfg.data.data} --split {cfg.data.split}; select again on this data")
        chosen = np.intersect1d(positions_of(rows.uids, selection.uids), pool)
        if len(chosen) < len(selection.uids):  # rows of the selection held out as dev are not trained on
            data.dev_source["selection_rows_held_out"] = len(selection.uids) - len(chosen)
        return ActiveSet(chosen)
    if cfg.selecting is not None:
        from ..selection.choose import budget_rows

        def counted_scores(positions: np.ndarray, embeddings: bool):
            counters["rescore_rows"] += len(positions)
            return student_scores(positions, embeddings=embeddings)

        return Dynamic(rows.uids, rows.labels, pool, cfg.selecting, budget_rows(cfg.selecting.budget, len(pool)),
                       scored=scored, teacher_logits=lambda p: np.stack([s.logits(p) for s in signals]),
                       student_scores=counted_scores, every=cfg.reselect_every, rescore_pool=cfg.rescore_pool,
                       rescore_by=cfg.rescore_by)
    if cfg.in_batch is not None:
        return InBatch(pool, cfg.in_batch, cfg.in_batch_criterion, cfg.train.seed)
    return ActiveSet(pool)


def evaluate(student, enc: Encoded, split_rows: Rows, num_labels: int, device: str, counters: dict) -> dict:
    """Accuracy and macro-F1, and ``top_class``: the class predicted most often and its share of the rows."""
    counters["eval_rows"] += len(split_rows)
    preds = predictions(student, enc, device)
    counts = np.bincount(preds, minlength=num_labels)
    top = int(counts.argmax())
    return {**classification_metrics(preds, split_rows.labels, num_labels),
            "top_class": {"class": top, "share": round(float(counts[top] / max(1, len(preds))), 4)}}


ONE_CLASS_SHARE = 0.95  # a student that gives one class to this share of the dev rows has not learnt the task


def one_class(top: dict | None, label_names: list[str] | None, where: str) -> dict | None:
    """The class the final student predicts for >= 95% of the dev (else test) rows; None when it does not."""
    if not top or top["share"] < ONE_CLASS_SHARE:
        return None
    name = label_names[top["class"]] if label_names else str(top["class"])
    return {"class": name, "share": top["share"], "rows": where}


def one_class_message(found: dict, head_init: str) -> str:
    probe = " or start from --head-init probe (a short run from the fresh head can stay here)" if head_init == "random" else ""
    return (f"the student predicts \"{found['class']}\" for {found['share']:.0%} of the {found['rows']} rows: it has "
            f"not learnt the task (a majority-class result); train more steps (--min-steps, --max-steps), raise --lr{probe}")


PROBE_ROWS = 1000  # a linear head on a few hundred features: more rows cost a forward pass and add little


def probe_head(student, tokens: Encoded, positions: np.ndarray, signals: list[TeacherSignal], num_labels: int,
               device: str, seed: int) -> dict:
    """--head-init probe: fit the student's head to the teachers' mean soft labels on ``positions`` (a seeded
    sample of ``PROBE_ROWS`` of them when there are more: the fit's forward pass counts as training time)."""
    from ..uncertainty import softmax
    from .head import init_head

    if len(positions) > PROBE_ROWS:
        positions = np.sort(np.random.default_rng(seed).choice(positions, PROBE_ROWS, replace=False))
    probs = np.mean([softmax(s.logits(positions)) for s in signals], axis=0)
    return init_head(student, tokens, positions, probs, num_labels, device, seed=seed)


def class_counts(labels: np.ndarray, rows: Rows) -> dict[str, int]:
    """How many of an epoch's training rows each class has, by name (a selection that drops or floods a class
    shows in metrics.jsonl, epoch by epoch)."""
    names = rows.label_names or [str(i) for i in range(rows.num_labels)]
    return dict(zip(names, np.bincount(labels, minlength=rows.num_labels).tolist()))


def rows_file(epoch: int) -> str:
    """Where a dynamic run keeps the rows it chose at ``epoch`` (0-based), relative to RUN_DIR; named, like
    metrics.jsonl's epochs, from 1."""
    return f"rows/epoch-{epoch + 1:03d}.arrow"


def save_rows(out: Path, epoch: int, uids: np.ndarray, labels: np.ndarray) -> None:
    """RUN_DIR/rows/epoch-NNN.arrow: the uids and labels a dynamic run trains on from that epoch until its next
    choice (an Arrow IPC file: Feather v2, so ``pandas.read_feather`` reads it too)."""
    import pyarrow as pa

    from ..cache.files import write_arrow

    (out / "rows").mkdir(exist_ok=True)
    write_arrow(out / rows_file(epoch), pa.table({"uid": pa.array(uids, pa.int64()), "label": pa.array(labels, pa.int64())}))


def log(out: Path, record: dict) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record, allow_nan=False) + "\n")


def save_student(final: Path, student, tokenizer, label_names: list[str] | None) -> None:
    """The trained student as a normal HF folder, swapped in whole."""
    clean_stale(final)
    if label_names:  # the student's logit i means the training rows' class i, by name
        student.config.id2label = dict(enumerate(label_names))
        student.config.label2id = {n: i for i, n in enumerate(label_names)}
    with replacing(final) as tmp:
        save_model(student.to("cpu"), tokenizer, tmp)


def run_summary(state: RunState, test: dict | None, signals: list[TeacherSignal], data: RunData,
                wall_seconds: float) -> dict:
    """RUN_DIR/summary.json: the scores, and where the time and the model forwards went."""
    c = state.counters
    return {
        "best_dev": state.best_dev, "test": test, "wall_seconds": round(wall_seconds, 2),
        "seconds": {k: round(v, 2) for k, v in state.times.items()},
        "student_rows_forward_backward": c["train_rows"],
        "student_rows_forward_only": c["rescore_rows"] + c["eval_rows"],
        "teacher_forwards": c["teacher_forwards"], "teacher_cache_keys": [s.key for s in signals],
        "steps": state.step, "epochs": state.epoch, "head_init": state.head, "train_pool_rows": len(data.train), "dev": data.dev_source, "selectkd_version": __version__,
    }
