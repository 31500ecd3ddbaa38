"""Train a teacher's classification head for a task and save a normal HF folder.

Two modes:
- ``head_only``: the encoder stays frozen; one forward pass captures what the head sees,
  then the head alone is fitted with full-batch L-BFGS. Minutes on a CPU, and the usual
  way to get a usable teacher from a sentence encoder such as all-mpnet-base-v2.
- full fine-tuning: every weight, AdamW with linear warm-up and decay, cross-entropy.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write_json, remove_path, replace_path, temp_name
from .data.holdout import hold_out_dev
from .data.labels import split_spec
from .data.rows import Rows, load_rows
from .data.sources import has_split
from .errors import SelectKDError
from .metrics import classification_metrics
from .models import check_max_length, load_classifier, load_tokenizer, resolve, save_model
from .outputs import FINETUNE, check_output, claim
from .ranges import COUNT, HOLDOUT, MAX_LENGTH, NON_NEGATIVE, POSITIVE, ROW_LIMIT, SEED, WARMUP, check_ranges
from .runtime import _autocast, pick_device, progress_bar
from .scoring.run import load_rows_for
from .distillation.evaluate import Encoded, predictions
from .scoring.tokens import length_batches
from .specs import DEFAULT_FINETUNE_LR, DataSpec


CHECKPOINT_STATE = "selectkd_finetune_checkpoint.json"  # written last into a checkpoint folder


@dataclass
class FinetuneResult:
    out: Path
    mode: str
    train_rows: int
    seconds: float
    metrics: dict = field(default_factory=dict)
    dev: dict = field(default_factory=dict)  # where the dev rows came from (a held-out part: how many)


def _batches(enc: Encoded, batch_size: int, shuffle_seed: int | None = None):
    """Length-grouped batches of (row positions, padded model inputs); optionally in a shuffled order.

    ``enc`` holds the rows tokenised once: every epoch and every evaluation reuses it."""
    groups = length_batches(enc.lengths, batch_size)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(groups))
        groups = [groups[i] for i in order]
    for g in groups:
        yield g, enc.inputs(g, "cpu")


def evaluate(model, rows: Rows, tokenizer, max_length: int, batch_size: int, device: str,
             enc: Encoded | None = None) -> dict:
    """Accuracy and macro-F1 of ``model`` on ``rows`` (inference mode, batches grouped by length)."""
    enc = enc or Encoded.of(tokenizer, rows, max_length)
    return classification_metrics(predictions(model, enc, device), rows.labels, rows.num_labels)


def _fit_head_only(model, rows: Rows, enc: Encoded, batch_size: int, device: str,
                   progress: bool, l2: float = 1e-3, max_iter: int = 300) -> dict:
    """Capture the head's input once (frozen encoder), then fit the head with L-BFGS."""
    import torch

    from .distillation.losses import check_finite

    head = getattr(model, "classifier", None)
    if head is None:
        raise SelectKDError(f"{type(model).__name__} has no `classifier` module; use full fine-tuning (drop --head-only)")
    captured: dict[int, torch.Tensor] = {}

    def grab(_module, inputs):
        x = inputs[0]
        grab.last = (x[:, :1, :] if x.dim() == 3 else x).detach().float().cpu()  # heads read the first token

    hook = head.register_forward_pre_hook(grab)
    model.eval()
    with torch.inference_mode(), progress_bar("head-only: encoding", len(rows), progress) as advance:
        for g, batch in _batches(enc, batch_size):
            model(**{k: v.to(device) for k, v in batch.items()})
            for j, i in enumerate(g):
                captured[int(i)] = grab.last[j]
            advance(len(g))
    hook.remove()
    x = torch.stack([captured[i] for i in range(len(rows))]).to(device)
    y = torch.tensor(rows.labels, device=device)
    head.train(False)
    params = [p for p in head.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.LBFGS(params, lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y) + l2 * sum((p * p).sum() for p in params if p.dim() > 1)
        loss.backward()
        return loss

    loss = float(opt.step(closure).detach())
    check_finite(loss, 0.0, max_iter, 1, lambda: "nothing was saved", "check the data and run again")
    with torch.no_grad():
        train_acc = float((head(x).argmax(-1) == y).float().mean())
    return {"head_loss": round(loss, 4), "train_accuracy": round(train_acc, 4), "l2": l2, "lbfgs_iterations": max_iter}


def checkpoint_path(out: Path) -> Path:
    """Where an unfinished full fine-tune to ``out`` keeps its state: a hidden folder beside ``out``."""
    return out.with_name(f".{out.name}.finetune-checkpoint")


@dataclass
class Checkpointing:
    """Save the training state to ``folder`` every ``seconds`` of training (0: never) under ``settings``
    (what must match for --resume to continue it), and whether to continue from an existing one."""

    folder: Path
    settings: dict
    seconds: float = 600.0
    resume: bool = False


def _save_checkpoint(ck: Checkpointing, model, opt, sched, losses: list[float], total: int, seconds: float) -> None:
    """The state after ``len(losses)`` steps (distill's checkpoint format, its own state file)."""
    from .distillation.checkpoint import save_state

    ck.folder.parent.mkdir(parents=True, exist_ok=True)
    save_state(ck.folder, {"model": model}, opt, sched, CHECKPOINT_STATE,
               {"settings": ck.settings, "step": len(losses), "steps": total, "losses": losses,
                "seconds": round(seconds, 3)})


def _load_checkpoint(ck: Checkpointing, model, opt, sched) -> tuple[list[float], float]:
    """(the losses of the steps the checkpoint holds, the training seconds they took); its state loaded
    into ``model``, ``opt`` and ``sched``."""
    from .distillation.checkpoint import load_state

    state = json.loads((ck.folder / CHECKPOINT_STATE).read_text())
    load_state(ck.folder, {"model": model}, opt, sched)
    return [float(x) for x in state["losses"]], float(state.get("seconds", 0.0))


def check_checkpoint(ck: Checkpointing, out: Path, overwrite: bool) -> bool:
    """True when training continues from ``ck.folder``. Refused in one line: a checkpoint left by an
    interrupted run without --resume (it would be lost) or --overwrite (start over), and --resume of a
    checkpoint made with other settings."""
    path = ck.folder / CHECKPOINT_STATE
    if not path.exists():
        return False
    try:
        state = json.loads(path.read_text())
        saved, step, steps = state["settings"], state["step"], state["steps"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SelectKDError(f"{ck.folder} is not a readable fine-tune checkpoint ({e}); move it away and run again") from e
    if not ck.resume:
        if overwrite:
            return False  # replaced by this run's first checkpoint, or removed when it finishes
        raise SelectKDError(f"an interrupted fine-tune to {out} stopped at step {step} of {steps} (kept in {ck.folder}); "
                            f"add --resume to continue it, or --overwrite to start over")
    changed = sorted(k for k in set(saved) | set(ck.settings) if saved.get(k) != ck.settings.get(k))
    if changed:
        raise SelectKDError(f"the checkpoint in {ck.folder} was made with other {', '.join(changed)}; run with the "
                            f"same options to continue it, or --overwrite without --resume to start over")
    return True


def _fit_full(model, rows: Rows, enc: Encoded, *, batch_size: int, epochs: int, max_steps: int | None, lr: float,
              warmup: float, seed: int, device: str, progress: bool, checkpoint: Checkpointing | None = None,
              resume: bool = False) -> dict:
    """AdamW with linear warm-up and decay to zero at the last step that runs (``max_steps`` when given,
    else every step of ``epochs``); stops at the first non-finite loss, before it reaches a weight.
    With ``checkpoint`` the state is saved every ``checkpoint.seconds``; ``resume`` continues from it
    step for step (the batch order is seeded per epoch, the RNG state is in the checkpoint)."""
    import torch

    from .distillation.losses import check_finite

    torch.manual_seed(seed)
    steps_per_epoch = math.ceil(len(rows) / batch_size)
    total = max_steps if max_steps is not None else steps_per_epoch * epochs
    epochs = math.ceil(total / steps_per_epoch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, int(warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
    losses, before = _load_checkpoint(checkpoint, model, opt, sched) if resume else ([], 0.0)
    resumed_at, start = len(losses), time.perf_counter()
    every = checkpoint.seconds if checkpoint is not None else 0.0
    last_save = time.perf_counter()

    def kept() -> str:
        saved = checkpoint is not None and (checkpoint.folder / CHECKPOINT_STATE).exists()
        return f"no model was saved; the last checkpoint is kept in {checkpoint.folder}" if saved else "nothing was saved"

    gold = rows.labels
    for epoch in range(len(losses) // steps_per_epoch, epochs):
        model.train()
        skip = len(losses) - epoch * steps_per_epoch  # steps of this epoch a resumed run has done
        with progress_bar(f"fine-tune epoch {epoch + 1}/{epochs}", len(rows), progress) as advance:
            for i, (g, batch) in enumerate(_batches(enc, batch_size, shuffle_seed=seed + epoch)):
                if len(losses) == total:
                    break
                if i < skip:
                    advance(len(g))
                    continue
                batch = {k: v.to(device) for k, v in batch.items()}
                labels = torch.from_numpy(gold[g]).to(device)
                with _autocast(device):  # bf16 on CUDA, as score and distill; float32 on the CPU
                    loss = torch.nn.functional.cross_entropy(model(**batch).logits.float(), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                check_finite(loss.detach(), grad_norm, len(losses) + 1, epoch + 1, kept, "lower --lr and run again")
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                advance(len(g))
                if every and time.perf_counter() - last_save >= every and len(losses) < total:
                    _save_checkpoint(checkpoint, model, opt, sched, losses, total, before + time.perf_counter() - start)
                    last_save = time.perf_counter()
    model.eval()
    metrics = {"final_train_loss": round(float(np.mean(losses[-steps_per_epoch:])), 4), "steps": len(losses)}
    if resumed_at:  # the seconds of the run before it was interrupted count too (finetune adds them)
        metrics.update(resumed_at_step=resumed_at, seconds_before_resume=round(before, 2))
    return metrics


def finetune(
    data: str,
    model: str,
    out: str | Path,
    *,
    split: str = "train",
    eval_data: str | None = None,
    eval_split: str | None = "dev",
    text_field: str = "text",
    text_pair_field: str | None = None,
    label_field: str = "label",
    limit: int | None = None,
    eval_limit: int | None = None,
    holdout: float = 0.1,
    head_only: bool = False,
    epochs: int = 3,
    max_steps: int | None = None,
    lr: float = DEFAULT_FINETUNE_LR,
    batch_size: int = 32,
    max_length: int = 128,
    warmup: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    trust_remote_code: bool = False,
    resume: bool = False,
    checkpoint_minutes: float = 10.0,
) -> FinetuneResult:
    """Train ``model`` as a classifier on ``data`` and save it to ``out`` (``score`` accepts it).

    Dev data is ``eval_data``, else the data's ``eval_split``, else a seeded stratified ``holdout``
    fraction of the training rows (not trained on); ``eval_limit=0`` or ``holdout=0`` evaluates nothing.
    A non-finite loss stops the run before anything is saved.
    Full fine-tuning saves its state every ``checkpoint_minutes`` (0: never) in a hidden folder beside
    ``out`` (``checkpoint_path``); ``resume`` continues an interrupted run from it, step for step, and
    the folder is removed once the model is saved.
    ``overwrite`` replaces only an earlier finetune output (its ``selectkd_finetune.json``), and
    only once the new model is saved whole beside it.
    """
    import torch

    from .cache.store import Store

    out = Path(out)
    check_ranges({"--epochs": (epochs, COUNT), "--max-steps": (max_steps, COUNT), "--lr": (lr, POSITIVE), "--batch-size": (batch_size, COUNT),
                  "--max-length": (max_length, MAX_LENGTH), "--warmup": (warmup, WARMUP), "--seed": (seed, SEED),
                  "--holdout": (holdout, HOLDOUT), "--eval-limit": (eval_limit, ROW_LIMIT),
                  "--checkpoint-minutes": (checkpoint_minutes, NON_NEGATIVE)})
    root = Store(cache_dir).root
    check_output(out, FINETUNE, overwrite, root)
    ref = resolve(model, root, trust_remote_code)
    check_max_length(ref, max_length)
    # a model saved with class names (a teacher fine-tuned before) keeps what its logits mean
    rows = load_rows_for(DataSpec(data, split, text_field, text_pair_field, label_field, limit), root, [ref])
    rows, eval_rows, dev = _train_and_dev(rows, data, eval_data, eval_split, eval_limit, holdout, seed, root)
    tokenizer, _ = load_tokenizer(ref)
    device = pick_device(device)
    torch.manual_seed(seed)
    net, trained = load_classifier(ref, rows.num_labels, allow_untrained_head=True, role="model", seed=seed)
    if rows.label_names:
        net.config.id2label = dict(enumerate(rows.label_names))
        net.config.label2id = {n: i for i, n in enumerate(rows.label_names)}
    net.to(device)
    ck = Checkpointing(checkpoint_path(out), {
        "rows": rows.fingerprint, "model": model, "epochs": epochs, "max_steps": max_steps, "lr": lr,
        "batch_size": batch_size, "max_length": max_length, "warmup": warmup, "seed": seed}, checkpoint_minutes * 60, resume)
    resuming = not head_only and check_checkpoint(ck, out, overwrite)
    if not head_only and overwrite and not resume and (ck.folder / CHECKPOINT_STATE).exists():
        remove_path(ck.folder)  # --overwrite without --resume: the interrupted run is started over
    t0 = time.perf_counter()
    enc = Encoded.of(tokenizer, rows, max_length)  # tokenised once for every epoch
    if head_only:
        metrics = _fit_head_only(net, rows, enc, batch_size, device, progress)
    else:
        metrics = _fit_full(net, rows, enc, batch_size=batch_size, epochs=epochs, max_steps=max_steps, lr=lr,
                            warmup=warmup, seed=seed, device=device, progress=progress, checkpoint=ck, resume=resuming)
    seconds = time.perf_counter() - t0 + metrics.get("seconds_before_resume", 0.0)
    if eval_rows is not None:
        metrics["eval"] = evaluate(net, eval_rows, tokenizer, max_length, batch_size, device)
    mode = "head-only" if head_only else "full"
    _save(net, tokenizer, out, overwrite, root, {
        "data": data, "split": split, "limit": limit, "model": model,
        "mode": mode, "epochs": None if head_only else epochs, "max_steps": None if head_only else max_steps,
        "lr": None if head_only else lr, "batch_size": batch_size, "max_length": max_length, "seed": seed,
        "train_rows": len(rows), "seconds": round(seconds, 2), "label_names": rows.label_names,
        "dev": dev, "metrics": metrics,
    })
    if (ck.folder / CHECKPOINT_STATE).exists():
        remove_path(ck.folder)  # the model is saved whole: the interrupted run's state is no longer needed
    return FinetuneResult(out, mode, len(rows), seconds, metrics, dev)


def _save(net, tokenizer, out: Path, overwrite: bool, root: Path, record: dict) -> None:
    """Save the model and ``selectkd_finetune.json`` beside it in a temp folder, then swap it in at ``out``."""
    tmp = temp_name(out)
    try:
        with claim(out, FINETUNE, overwrite, root):
            save_model(net.to("cpu"), tokenizer, tmp)
            atomic_write_json(tmp / "selectkd_finetune.json", record)
            replace_path(tmp, out)  # the old model stays whole until this swap
    finally:
        if os.path.lexists(tmp):
            remove_path(tmp)


def _train_and_dev(rows: Rows, data: str, eval_data: str | None, eval_split: str | None, eval_limit: int | None,
                   holdout: float, seed: int, root: Path) -> tuple[Rows, Rows | None, dict]:
    """(rows to train on, dev rows or None, where dev came from): --eval-data or the data's dev split,
    mapped by the training rows' label names; else a held-out part of the training rows."""
    if eval_limit == 0 or not eval_split:
        return rows, None, {"rows": 0}
    if eval_data or has_split(data, eval_split, root):
        dev = load_rows(split_spec(rows, eval_data or data, eval_split, eval_limit), root, num_labels=rows.num_labels)
        return rows, dev, {"data": eval_data or data, "split": eval_split, "rows": len(dev)}
    if not holdout:
        return rows, None, {"rows": 0}
    train, dev, source = hold_out_dev(rows, holdout, seed, eval_limit)
    return rows.take(train, "holdout train"), dev, source



