"""The distillation trainer: a student learns from cached teacher logits, in one readable loop.

Read top to bottom: config -> data and teacher signals -> student -> the step -> the epoch
loop (re-selection, training, evaluation, checkpoint) -> the summary. No HF Trainer.

Selection modes: ``selection`` (a saved Selection, static), ``budget`` + ``strategy`` +
``reselect_every`` (dynamic: re-score the pool with the current student and re-select),
``in_batch`` (the paper's own: CE on every row, KD on the top fraction of each batch by the
student's uncertainty), or none of them (full-data KD).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .. import parallel
from .._version import __version__
from ..atomic import atomic_write_json, clean_stale, remove_path, replace_path, temp_name
from ..cache.arrays import column_matrix
from ..cache.store import Store
from ..data.rows import DataSpec, Rows, load_rows
from ..errors import CacheError, SelectKDError
from ..metrics import classification_metrics
from ..models import check_max_length, follow_umask, load_classifier, load_tokenizer, resolve, save_model
from ..outputs import RUN, check_output
from ..ranges import COUNT, FRACTION, HOLDOUT, MAX_LENGTH, NON_NEGATIVE, POSITIVE, ROW_LIMIT, SEED, WARMUP, check_ranges
from ..runtime import pick_device, progress_bar
from ..scoring.run import load_rows_for, score_kw as score
from ..scoring.tokens import collate, encode, length_batches, tokenize
from .losses import (ADOPTIONS, KD_LOSSES, OBJECTIVES, adopted_kd, adoption_weights, ce, check_finite, hidden_alignment,
                     kd, layer_map, objective_weights, top_fraction, uncertainty)

IN_BATCH_CRITERIA = ("entropy", "margin", "least_confidence", "kl", "random")


@dataclass
class DistillConfig:
    """Everything that decides a run; saved as RUN_DIR/config.json and compared on --resume."""

    data: str
    teachers: list[str]
    student: str
    out: str
    split: str = "train"
    eval_data: str | None = None
    eval_split: str = "dev"
    test_data: str | None = None
    test_split: str = "test"
    text_field: str = "text"
    text_pair_field: str | None = None
    label_field: str = "label"
    limit: int | None = None
    eval_limit: int | None = None
    test_limit: int | None = None
    holdout: float = 0.1  # no dev data given or found: this fraction of the training rows is held out as dev
    # selection
    selection: str | None = None
    budget: str | None = None
    strategy: str = "entropy"
    criterion: str = "entropy"
    clusters: int = 30
    per_class: bool = False
    sample: bool = False
    sample_temperature: float = 1.0
    reselect_every: int = 1
    rescore_pool: float = 1.0
    rescore_by: str = "random"
    in_batch: float | None = None
    # losses
    kd_loss: str = "mse"
    temperature: float = 1.0
    ce_alpha: float = 1.0
    kd_alpha: float = 1.0
    adoption: str | None = None
    objective: str = "none"
    pt_alpha: float = 0.0
    live_teacher: bool = False
    # optimisation
    epochs: int = 3
    lr: float = 2e-5
    batch_size: int = 32
    max_length: int = 128
    warmup: float = 0.1
    seed: int = 0
    checkpoint: bool = True
    cache_dir: str | None = None
    device: str | None = None
    trust_remote_code: bool = False


@dataclass
class DistillResult:
    out: Path
    best_dev: dict
    test: dict | None
    summary: dict = field(default_factory=dict)


# -- checks before any work ---------------------------------------------------------------------------

def check_config(cfg: DistillConfig) -> None:
    """Refuse what cannot run (or would train to NaN) before any data is read or any folder made."""
    modes = [m for m, on in (("--selection", cfg.selection), ("--budget", cfg.budget), ("--in-batch", cfg.in_batch)) if on]
    if len(modes) > 1:
        raise SelectKDError(f"{' and '.join(modes)} are different selection modes; choose one")
    if not cfg.teachers:
        raise SelectKDError("distillation needs a teacher; give --teacher")
    check_ranges({
        "--lr": (cfg.lr, POSITIVE), "--temperature": (cfg.temperature, POSITIVE), "--ce-alpha": (cfg.ce_alpha, NON_NEGATIVE),
        "--kd-alpha": (cfg.kd_alpha, NON_NEGATIVE), "--pt-alpha": (cfg.pt_alpha, NON_NEGATIVE),
        "--warmup": (cfg.warmup, WARMUP), "--epochs": (cfg.epochs, COUNT), "--batch-size": (cfg.batch_size, COUNT),
        "--max-length": (cfg.max_length, MAX_LENGTH), "--seed": (cfg.seed, SEED), "--holdout": (cfg.holdout, HOLDOUT),
        "--in-batch": (cfg.in_batch, FRACTION), "--clusters": (cfg.clusters, COUNT),
        "--sample-temperature": (cfg.sample_temperature, POSITIVE), "--reselect-every": (cfg.reselect_every, COUNT),
        "--rescore-pool": (cfg.rescore_pool, FRACTION), "--limit": (cfg.limit, COUNT),
        "--eval-limit": (cfg.eval_limit, ROW_LIMIT), "--test-limit": (cfg.test_limit, ROW_LIMIT),
    })
    if cfg.kd_loss not in KD_LOSSES:
        raise SelectKDError(f"unknown --kd-loss {cfg.kd_loss!r}; valid: {', '.join(KD_LOSSES)}")
    if cfg.adoption is not None:
        if cfg.adoption not in ADOPTIONS:
            raise SelectKDError(f"unknown --adoption {cfg.adoption!r}; valid: {', '.join(ADOPTIONS)}")
        if len(cfg.teachers) < 2:
            raise SelectKDError("--adoption chooses between teachers; give two --teacher (a small and a large one)")
        if cfg.objective != "none":
            raise SelectKDError("--adoption and --objective are not combined (the paper never does); use one")
    if cfg.objective not in OBJECTIVES:
        raise SelectKDError(f"unknown --objective {cfg.objective!r}; valid: {', '.join(OBJECTIVES)}")
    if cfg.objective != "none" and cfg.pt_alpha <= 0:
        raise SelectKDError(f"--objective {cfg.objective} weighs hidden-state alignment; give --pt-alpha > 0")
    if cfg.in_batch is not None and cfg.criterion not in IN_BATCH_CRITERIA:
        raise SelectKDError(f"in-batch --criterion must be one of {', '.join(IN_BATCH_CRITERIA)}")
    if cfg.budget:
        from ..selection.choose import check_budget, parse_budget
        from ..selection.strategies import get_strategy

        check_budget(parse_budget(cfg.budget))
        get_strategy(cfg.strategy)  # an unknown name is refused before the run folder is made
    if cfg.rescore_by not in ("random", "cluster"):
        raise SelectKDError(f"unknown --rescore-by {cfg.rescore_by!r}; valid: random, cluster")


def dev_holdout(cfg: DistillConfig, root: Path) -> float:
    """The fraction of the training rows held out as dev: ``cfg.holdout`` when no other dev data
    is given or found (no --eval-data, no dev split, --eval-limit not 0), else none."""
    from ..finetune import _has_split

    if cfg.eval_data or cfg.eval_limit == 0 or _has_split(cfg.data, cfg.eval_split, root):
        return 0.0
    return cfg.holdout


def run_config(cfg: DistillConfig) -> dict:
    """What RUN_DIR/config.json records: the config as JSON, with the holdout that applies to it."""
    return json.loads(json.dumps({**asdict(cfg), "holdout": dev_holdout(cfg, Store(cfg.cache_dir).root)}))


# A field a saved config lacks counts as the value that does what runs did before the field existed.
BEFORE_FIELD = {"holdout": 0.0}


def config_diff(saved: dict, now: dict) -> list[str]:
    """The settings in which a run's saved config.json and ``now`` (``run_config``) differ."""
    defaults = json.loads(json.dumps({f.name: f.default for f in fields(DistillConfig) if f.default is not MISSING}))
    before = {**defaults, **BEFORE_FIELD}
    return sorted({k for k, v in now.items() if saved.get(k, before.get(k, MISSING)) != v} | (set(saved) - set(now)))


def prepare_run_dir(out: Path, config: dict, resume: bool, overwrite: bool, cache_root: Path | None = None) -> None:
    """Check ``out`` (resume: the same settings; else free, or a run to replace) and save ``config``.

    ``overwrite`` discards only a distill run (selectkd/outputs.py): renamed away whole, then deleted.
    """
    saved = out / "config.json"
    if resume:
        if not saved.exists():
            raise SelectKDError(f"nothing to resume in {out}; run without --resume")
        diff = [k for k in config_diff(json.loads(saved.read_text()), config) if k != "device"]
        if diff:
            raise SelectKDError(f"{out} holds a run with other settings ({', '.join(diff)}); use another --out or --overwrite")
        return
    clean_stale(out)
    if check_output(out, RUN, overwrite, cache_root):
        discarded = temp_name(out, "discarded")
        os.rename(out, discarded)
        remove_path(discarded)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(saved, config)


def finished_summary(out: str | Path, cfg: DistillConfig) -> dict | None:
    """The summary of a run in ``out`` that finished with exactly ``cfg``, else None.

    A field the saved config lacks counts as what runs did before it existed (``BEFORE_FIELD``,
    else its default): a field added to DistillConfig since the run did not change what the run did.
    """
    out = Path(out)
    try:
        saved = json.loads((out / "config.json").read_text())
        summary = json.loads((out / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return None if config_diff(saved, run_config(cfg)) else summary


def same_segmentation(tok_a, tok_b, texts: list[str]) -> bool:
    """True when two tokenizers split the texts into the same word pieces (specials aside)."""
    for text in texts:
        a = [t for t in tok_a.tokenize(text)]
        b = [t for t in tok_b.tokenize(text)]
        if a != b:
            return False
    return True


def rescore_sample(n_rows: int, fraction: float, rng: np.random.Generator,
                   groups: np.ndarray | None = None) -> np.ndarray:
    """The rows to re-score: a random ``fraction`` of the pool, or the same fraction of every
    group (k-means cluster), shared by largest remainder so each cluster keeps its share."""
    from ..selection.choose import largest_remainder

    k = max(1, int(round(fraction * n_rows)))
    if groups is None:
        return np.sort(rng.choice(n_rows, k, replace=False))
    quotas = largest_remainder(np.bincount(groups), k)
    picked = [rng.choice(np.flatnonzero(groups == g), q, replace=False) for g, q in enumerate(quotas) if q]
    return np.sort(np.concatenate(picked))


# -- teacher signals -------------------------------------------------------------------------------

@dataclass
class TeacherSignal:
    """One teacher's outputs for the training rows, in row order: cached, or a live model."""

    name: str
    key: str | None
    logits: np.ndarray | None  # (N, C), cached
    cls: np.ndarray | None  # (N, L+1, H) float16, cached
    num_layers: int
    hidden_size: int
    num_parameters: int
    model: object | None = None  # live teacher (token-level alignment)
    tokenizer: object | None = None


def cached_signals(cfg: DistillConfig, rows: Rows, need_cls: bool, progress: bool) -> list[TeacherSignal]:
    """Teacher logits (+ [CLS] states) from the cache, computing what is missing first."""
    res = score(cfg.data, cfg.split, cfg.teachers, None, text_field=cfg.text_field,
                 text_pair_field=cfg.text_pair_field, label_field=cfg.label_field, limit=cfg.limit,
                 max_length=cfg.max_length, cls_states=need_cls, cache_dir=cfg.cache_dir, device=cfg.device,
                 progress=progress, trust_remote_code=cfg.trust_remote_code)
    store = res.store
    signals = []
    for name, report in zip(cfg.teachers, res.teachers):
        entry = store.entry("teacher", report.key)
        table = entry.read_parts()
        uids = table.column("uid").to_numpy()
        if not np.array_equal(uids, rows.uids):
            raise CacheError(f"teacher cache {entry.key} covers other rows than the training data; re-score it")
        logits = column_matrix(table, "logits")
        if not np.isfinite(logits).all():
            raise CacheError(f"teacher cache {entry.key} holds NaN or Inf logits; remove it with "
                             f"`selectkd cache rm {entry.key}` and re-score the teacher")
        manifest = entry.manifest()
        cls = None
        layers, hidden = 0, 0
        if need_cls:
            layers_plus_one, hidden = manifest["columns"]["cls"]
            layers = layers_plus_one - 1
            cls = column_matrix(table, "cls").reshape(len(rows), layers_plus_one, hidden)
        signals.append(TeacherSignal(name, entry.key, logits, cls, layers, hidden,
                                     int(manifest.get("num_parameters") or 0)))
    return signals


# -- the run ---------------------------------------------------------------------------------------

def _rows(cfg: DistillConfig, data: str | None, split: str, limit: int | None, root: Path, train: Rows) -> Rows | None:
    """Dev or test rows, their labels mapped by the training rows' names (None: no such data)."""
    from ..finetune import _has_split

    if data is None and not _has_split(cfg.data, split, root):
        return None
    if limit == 0:  # --eval-limit 0 / --test-limit 0: skip that evaluation
        return None
    names = tuple(train.label_names) if train.label_names else None
    return load_rows(DataSpec(data or cfg.data, split, cfg.text_field, cfg.text_pair_field, cfg.label_field, limit, names),
                     root, num_labels=train.num_labels)


@dataclass
class RunData:
    """The training rows (all of them: the teacher cache covers them, by uid), the positions trained
    on (all but a held-out dev part), and the dev and test rows."""

    rows: Rows
    train: np.ndarray
    dev: Rows | None
    test: Rows | None
    dev_source: dict


def run_data(cfg: DistillConfig, holdout: float, root: Path) -> RunData:
    """Load the rows; with ``holdout`` > 0 (no other dev data), a seeded stratified dev part of the
    training rows that is never trained on."""
    from ..data.rows import hold_out_dev

    teachers = [resolve(t, root, cfg.trust_remote_code) for t in cfg.teachers]
    spec = DataSpec(cfg.data, cfg.split, cfg.text_field, cfg.text_pair_field, cfg.label_field, cfg.limit)
    rows = load_rows_for(spec, root, teachers)  # the same mapping score() gives the teacher cache
    test = _rows(cfg, cfg.test_data, cfg.test_split, cfg.test_limit, root, rows)
    if not holdout:
        dev = _rows(cfg, cfg.eval_data, cfg.eval_split, cfg.eval_limit, root, rows)
        source = {"data": cfg.eval_data or cfg.data, "split": cfg.eval_split} if dev is not None else {}
        return RunData(rows, np.arange(len(rows)), dev, test, {**source, "rows": len(dev) if dev is not None else 0})
    train, dev, source = hold_out_dev(rows, holdout, cfg.seed, cfg.eval_limit)
    return RunData(rows, train, dev, test, source)


def distill(cfg: DistillConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> DistillResult:
    """Train ``cfg.student`` from ``cfg.teachers`` on ``cfg.data``; write RUN_DIR ``cfg.out``."""
    import torch
    from safetensors.torch import load_file, save_file

    from ..selection.choose import choose
    from ..selection.pool import positions_of
    from ..selection.saved import load_selection
    from ..selection.strategies import Pool

    t_start = time.perf_counter()
    check_config(cfg)
    out = Path(cfg.out)
    root = Store(cfg.cache_dir).root
    config = run_config(cfg)
    if not resume:
        check_output(out, RUN, overwrite, root)  # refused before any work; checked again when the run starts
    rank, world, device = parallel.setup(pick_device(cfg.device))
    progress = progress and rank == 0

    # -- data ----------------------------------------------------------------------------------
    data = run_data(cfg, config["holdout"], root)
    rows, dev, test = data.rows, data.dev, data.test
    labels = rows.labels
    static_uids = None
    if cfg.selection:
        sel = load_selection(root, cfg.selection)
        made_from = sel.provenance.get("data", {})
        if made_from.get("fingerprint") != rows.fingerprint or made_from.get("split") != cfg.split:
            raise SelectKDError(f"selection {cfg.selection!r} was made from other data or split than --data "
                                f"{cfg.data} --split {cfg.split}; select again on this data")
        static_uids = sel.uids

    # -- student and teacher signals -------------------------------------------------------------
    student_ref = resolve(cfg.student, root, cfg.trust_remote_code)
    check_max_length(student_ref, cfg.max_length)
    tokenizer, student_tok_fp = load_tokenizer(student_ref)
    use_pt = cfg.pt_alpha > 0
    sample_texts = list(rows.dataset["text"][:200])
    if cfg.live_teacher:
        if not use_pt:
            raise SelectKDError("--live-teacher runs the teacher for token-level alignment; give --pt-alpha > 0")
        signals = cached_signals(cfg, rows, need_cls=False, progress=progress)
        for s in signals:
            ref = resolve(s.name, root, cfg.trust_remote_code)
            s.tokenizer, _ = load_tokenizer(ref)
            s.model, _ = load_classifier(ref, rows.num_labels)
            s.model.to(device).eval()
            s.num_layers, s.hidden_size = s.model.config.num_hidden_layers, s.model.config.hidden_size
    else:
        signals = cached_signals(cfg, rows, need_cls=use_pt, progress=progress)
    if cfg.live_teacher:  # token-level alignment pairs tokens; a [CLS] state is one vector per row
        for s in signals:
            t_tok = s.tokenizer or load_tokenizer(resolve(s.name, root, cfg.trust_remote_code))[0]
            if not same_segmentation(tokenizer, t_tok, sample_texts):
                raise SelectKDError(f"student {cfg.student} and teacher {s.name} split text differently; token-level "
                                    f"alignment needs the same segmentation (cached [CLS] alignment does not: drop --live-teacher)")
    if cfg.adoption:  # the smaller teacher takes the uncertain rows
        signals.sort(key=lambda s: s.num_parameters)

    torch.manual_seed(cfg.seed)
    student, _ = load_classifier(student_ref, rows.num_labels, allow_untrained_head=True, role="student", seed=cfg.seed)
    student.to(device)
    model = student  # what the training step calls: the student itself, or its DDP wrapper
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(student, device_ids=[device] if device.startswith("cuda") else None)
    n_student_layers = student.config.num_hidden_layers
    proj = None
    lmap = None
    if use_pt:
        t0 = signals[0]
        lmap = layer_map(n_student_layers, t0.num_layers)
        if student.config.hidden_size != t0.hidden_size:
            proj = torch.nn.Linear(student.config.hidden_size, t0.hidden_size).to(device)

    # -- tokens, once ------------------------------------------------------------------------------
    pairs = rows.dataset["text_pair"] if "text_pair" in rows.dataset.column_names else None
    texts = list(rows.dataset["text"])
    ids, types = encode(tokenizer, texts, list(pairs) if pairs is not None else None, cfg.max_length)

    def inputs(batch_rows: np.ndarray) -> dict:
        """Padded model inputs for training rows, on the device."""
        tt = [types[i] for i in batch_rows] if types is not None else None
        return {k: v.to(device) for k, v in collate([ids[i] for i in batch_rows], pad, tt).items()}

    t_ids = None
    if cfg.live_teacher:
        t_ids = tokenize(signals[0].tokenizer, texts, list(pairs) if pairs is not None else None, cfg.max_length)
        bad = [i for i in range(len(ids)) if len(ids[i]) != len(t_ids[i])]
        if bad:
            raise SelectKDError(f"student and teacher give different token counts for row {bad[0]}; token-level "
                                f"alignment needs the same segmentation")
    lengths = np.array([len(x) for x in ids])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    all_rows = data.train  # the training pool: every row but a held-out dev part

    def batches(active: np.ndarray, seed: int) -> list[np.ndarray]:
        groups = [active[g] for g in length_batches(lengths[active], cfg.batch_size)]
        order = np.random.default_rng(seed).permutation(len(groups))
        return [groups[i] for i in order]

    # -- optimizer (steps known up front: every mode keeps the active set's size fixed) ---------------
    if static_uids is not None:  # rows of the selection that were held out as dev are not trained on
        active = np.intersect1d(positions_of(rows.uids, static_uids), all_rows)
        if len(active) < len(static_uids):
            data.dev_source["selection_rows_held_out"] = len(static_uids) - len(active)
    elif cfg.budget:
        from ..selection.choose import budget_rows, parse_budget

        active = None
        n_active = budget_rows(parse_budget(cfg.budget), len(all_rows))
    else:
        active = all_rows
    n_active = len(active) if active is not None else n_active
    steps_per_epoch = math.ceil(n_active / cfg.batch_size) // world  # each rank takes every world-th batch
    if steps_per_epoch < 1:
        raise SelectKDError(f"{n_active} training rows make fewer batches than processes ({world}); lower --batch-size")
    total_steps = steps_per_epoch * cfg.epochs
    params = list(student.parameters()) + (list(proj.parameters()) if proj is not None else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    warm = max(1, int(cfg.warmup * total_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total_steps - s) / max(1, total_steps - warm))))

    # -- state, or resume --------------------------------------------------------------------------
    if rank == 0:
        prepare_run_dir(out, config, resume, overwrite, root)
    parallel.barrier(world)
    ckpt = out / "checkpoint"
    state = {"epoch": 0, "step": 0, "best_dev": None, "counters": {"train_rows": 0, "rescore_rows": 0, "eval_rows": 0,
             "teacher_forwards": 0}, "times": {"train": 0.0, "rescore": 0.0, "eval": 0.0}}
    if resume and (ckpt / "state.json").exists():
        state = json.loads((ckpt / "state.json").read_text())
        weights = load_file(str(ckpt / "student.safetensors"))
        student.load_state_dict(weights, strict=True)
        if proj is not None:
            proj.load_state_dict(load_file(str(ckpt / "proj.safetensors")))
        extra = torch.load(ckpt / "optim.pt", weights_only=True)
        opt.load_state_dict(extra["optimizer"])
        sched.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["rng"])
        if state.get("active") is not None:
            active = np.asarray(state["active"], dtype=np.int64)
    elif resume:
        (out / "metrics.jsonl").unlink(missing_ok=True)  # killed before the first checkpoint: start over

    def forward_logits(rows_idx: np.ndarray, want_embedding: bool = False):
        """Student logits (and mean-pooled embeddings) for rows, no grad, length-grouped."""
        logits = np.zeros((len(rows_idx), rows.num_labels), dtype=np.float32)
        emb = None
        student.eval()
        with torch.inference_mode():
            for g in length_batches(lengths[rows_idx], 128):
                batch = inputs(rows_idx[g])
                o = student(**batch, output_hidden_states=want_embedding)
                logits[g] = o.logits.float().cpu().numpy()
                if want_embedding:
                    h = o.hidden_states[-1]
                    m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
                    e = torch.nn.functional.normalize(((h * m).sum(1) / m.sum(1)).float(), dim=-1).cpu().numpy()
                    if emb is None:
                        emb = np.zeros((len(rows_idx), e.shape[1]), dtype=np.float32)
                    emb[g] = e
        return logits, emb

    def evaluate(split_rows: Rows) -> dict:
        s_tok, s_types = encode(tokenizer, list(split_rows.dataset["text"]),
                                list(split_rows.dataset["text_pair"]) if "text_pair" in split_rows.dataset.column_names else None,
                                cfg.max_length)
        preds = np.zeros(len(split_rows), dtype=np.int64)
        student.eval()
        with torch.inference_mode():
            for g in length_batches(np.array([len(x) for x in s_tok]), 128):
                tt = [s_types[i] for i in g] if s_types is not None else None
                batch = {k: v.to(device) for k, v in collate([s_tok[i] for i in g], pad, tt).items()}
                preds[g] = student(**batch).logits.argmax(-1).cpu().numpy()
        state["counters"]["eval_rows"] += len(split_rows)
        return classification_metrics(preds, split_rows.labels, rows.num_labels)

    def reselect(epoch: int) -> np.ndarray:
        """Dynamic selection: re-score (a fraction of) the pool with the current student, then choose."""
        rng = np.random.default_rng(cfg.seed + 1000 + epoch)
        groups = clusters_of_rows()
        pool_idx = all_rows if cfg.rescore_pool >= 1 else all_rows[rescore_sample(
            len(all_rows), cfg.rescore_pool, rng, groups[all_rows] if groups is not None else None)]
        need_emb = cfg.strategy == "coverage"
        # each rank re-scores its share of the pool; the shares are gathered so every rank chooses alike
        mine = pool_idx[rank::world]
        logits, emb = forward_logits(mine, want_embedding=need_emb)
        if world > 1:
            shares = parallel.gather((logits, emb), world)
            logits = np.zeros((len(pool_idx), rows.num_labels), dtype=np.float32)
            emb = np.zeros((len(pool_idx), shares[0][1].shape[1]), dtype=np.float32) if need_emb else None
            for r, (lg, em) in enumerate(shares):
                logits[r::world] = lg
                if need_emb:
                    emb[r::world] = em
        state["counters"]["rescore_rows"] += len(pool_idx)
        from ..uncertainty import entropy as h
        from ..uncertainty import kl_divergence
        from ..uncertainty import least_confidence as lc
        from ..uncertainty import margin as mg
        from ..uncertainty import softmax

        p = softmax(logits)
        t_logits = np.stack([s.logits[pool_idx] for s in signals]) if signals[0].logits is not None else None
        kl = (np.stack([kl_divergence(softmax(t), p) for t in t_logits], axis=1) if t_logits is not None else None)
        pool = Pool(uids=rows.uids[pool_idx], labels=labels[pool_idx], entropy=h(p), margin=mg(p),
                    least_confidence=lc(p), kl=kl, teacher_logits=t_logits, embeddings=emb)
        chosen = choose(pool, cfg.strategy, min(n_active, len(pool_idx)), criterion=cfg.criterion,
                        clusters=min(cfg.clusters, len(pool_idx)), per_class=cfg.per_class, sample=cfg.sample,
                        temperature=cfg.sample_temperature, seed=cfg.seed + epoch)
        picked = pool_idx[chosen.indices]
        if len(picked) < n_active:  # a re-scored fraction: top up with random unscored rows to keep the budget
            rest = np.setdiff1d(all_rows, picked)
            picked = np.concatenate([picked, rng.choice(rest, n_active - len(picked), replace=False)])
        return np.sort(picked)

    row_clusters: dict[str, np.ndarray] = {}

    def clusters_of_rows() -> np.ndarray | None:
        """k-means cluster of every row, from the cached student embeddings (computed once)."""
        if cfg.rescore_by != "cluster":
            return None
        if "c" not in row_clusters:
            from ..selection.pool import load_pool
            from ..selection.strategies import kmeans_clusters

            res = score(cfg.data, cfg.split, cfg.teachers, cfg.student, text_field=cfg.text_field,
                        text_pair_field=cfg.text_pair_field, label_field=cfg.label_field, limit=cfg.limit,
                        max_length=cfg.max_length, cache_dir=cfg.cache_dir, device=cfg.device, progress=progress,
                        trust_remote_code=cfg.trust_remote_code)
            pool = load_pool(res.store.entry("student", res.student.key), [], embeddings=True, verify=False)
            groups = np.zeros(len(rows), dtype=np.int64)
            groups[positions_of(rows.uids, pool.uids)] = kmeans_clusters(pool.embeddings, min(cfg.clusters, len(rows)),
                                                                         seed=cfg.seed)
            row_clusters["c"] = groups
        return row_clusters["c"]

    def initial_selection() -> np.ndarray:
        """Dynamic mode, epoch 0: the student's fresh head knows nothing, so use the cached probe scores."""
        from ..selection.pool import load_pool, needs_teacher_logits

        res = score(cfg.data, cfg.split, cfg.teachers, cfg.student, text_field=cfg.text_field,
                    text_pair_field=cfg.text_pair_field, label_field=cfg.label_field, limit=cfg.limit,
                    max_length=cfg.max_length, cache_dir=cfg.cache_dir, device=cfg.device, progress=progress,
                    trust_remote_code=cfg.trust_remote_code)
        pool = load_pool(res.store.entry("student", res.student.key),
                         [res.store.entry("teacher", t.key) for t in res.teachers],
                         embeddings=cfg.strategy == "coverage", teacher_logits=needs_teacher_logits(cfg.strategy, cfg.criterion))
        if len(all_rows) < len(rows):  # never choose a held-out dev row
            pool = pool.take(np.flatnonzero(np.isin(pool.uids, rows.uids[all_rows])))
        chosen = choose(pool, cfg.strategy, n_active, criterion=cfg.criterion, clusters=cfg.clusters,
                        per_class=cfg.per_class, sample=cfg.sample, temperature=cfg.sample_temperature, seed=cfg.seed)
        return np.sort(positions_of(rows.uids, pool.uids[chosen.indices]))

    # -- the step ------------------------------------------------------------------------------
    def step(batch_rows: np.ndarray) -> float:
        student.train()
        batch = inputs(batch_rows)
        y = torch.from_numpy(labels[batch_rows]).to(device)
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else contextlib.nullcontext()
        with ctx:
            o = model(**batch, output_hidden_states=use_pt)
        zs = o.logits.float()
        u = uncertainty(zs)
        t_logits = [torch.from_numpy(s.logits[batch_rows]).to(device) for s in signals]
        loss_ce = ce(zs, y).mean()
        kd_rows = [kd(zs, zt, cfg.kd_loss, cfg.temperature) for zt in t_logits]
        if cfg.in_batch is not None:  # the paper: KD only on the most uncertain rows of the batch
            crit = {"entropy": u, "margin": -_margin(zs), "least_confidence": 1 - torch.softmax(zs.detach(), -1).max(-1).values,
                    "kl": torch.stack(kd_rows).mean(0).detach(), "random": torch.rand(len(u), device=u.device)}[cfg.criterion]
            keep = top_fraction(crit, cfg.in_batch)
            loss_kd = torch.stack(kd_rows).mean(0)[keep].mean()
        elif cfg.adoption:
            w_small = adoption_weights(u, cfg.adoption)
            loss_kd = adopted_kd(kd_rows[0], kd_rows[-1], w_small, cfg.adoption)
        else:
            loss_kd = None
        loss_pt = torch.zeros((), device=device)
        if use_pt:
            mask = batch["attention_mask"]
            s_states = torch.stack([o.hidden_states[l] for l in range(n_student_layers + 1)], dim=1)  # (B, L+1, T, H)
            if proj is not None:
                s_states = proj(s_states.float())
            if cfg.live_teacher:
                t_batch = {k: v.to(device) for k, v in collate([t_ids[i] for i in batch_rows], signals[0].tokenizer.pad_token_id).items()}
                with torch.inference_mode():
                    th = signals[0].model(**t_batch, output_hidden_states=True).hidden_states
                state["counters"]["teacher_forwards"] += len(batch_rows)
                t_states = torch.stack([th[j] for j in lmap], dim=1).clone()
                pt_rows = hidden_alignment(s_states, t_states, mask)
            else:
                t_cls = torch.from_numpy(signals[0].cls[batch_rows][:, lmap, :].astype(np.float32)).to(device)
                pt_rows = hidden_alignment(s_states[:, :, 0, :], t_cls)
        if loss_kd is None:
            kd_mean = torch.stack(kd_rows).mean(0)
            if use_pt:
                w_kd, w_pt = objective_weights(u, cfg.objective)
                loss_kd = (w_kd * kd_mean).mean()
                loss_pt = (w_pt * pt_rows).mean()
            else:
                loss_kd = kd_mean.mean()
        loss = cfg.ce_alpha * loss_ce + cfg.kd_alpha * loss_kd + cfg.pt_alpha * loss_pt
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1 and proj is not None:  # the projection lives outside DDP: average its gradients by hand
            import torch.distributed as dist

            for p in proj.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)  # DDP averaged the gradients: every rank agrees
        check_finite(loss.detach(), grad_norm, state["step"] + 1, state["epoch"] + 1, kept)
        opt.step()
        sched.step()
        state["counters"]["train_rows"] += len(batch_rows) * world  # every rank steps on a batch of its own
        return float(loss.detach())

    def kept() -> str:
        """What a stopped run leaves the user: never a student, perhaps the last good checkpoint."""
        last = f"{ckpt} holds epoch {state['epoch']}" if (ckpt / "state.json").exists() else "no checkpoint was made"
        return f"no student was saved and {last}"

    def save_checkpoint() -> None:
        tmp = temp_name(ckpt)
        clean_stale(ckpt)
        tmp.mkdir()
        save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(tmp / "student.safetensors"))
        if proj is not None:
            save_file(proj.state_dict(), str(tmp / "proj.safetensors"))
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state()},
                   tmp / "optim.pt")
        atomic_write_json(tmp / "state.json", {**state, "active": active.tolist() if active is not None else None})
        follow_umask(tmp)
        replace_path(tmp, ckpt)

    def log(record: dict) -> None:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")

    # -- the epoch loop ---------------------------------------------------------------------------
    for epoch in range(state["epoch"], cfg.epochs):
        if cfg.budget and state.get("selected_epoch") != epoch and (active is None or epoch % cfg.reselect_every == 0):
            t0 = time.perf_counter()
            active = initial_selection() if epoch == 0 else reselect(epoch)
            state["selected_epoch"] = epoch
            state["times"]["rescore"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed + epoch)  # dropout: the same whether resumed or not
        losses = []
        epoch_batches = batches(active, cfg.seed + epoch)[rank::world][:steps_per_epoch]
        with progress_bar(f"epoch {epoch + 1}/{cfg.epochs}", sum(map(len, epoch_batches)), progress) as advance:
            for b in epoch_batches:
                losses.append(step(b))
                state["step"] += 1
                advance(len(b))
        state["times"]["train"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        record = {"epoch": epoch + 1, "step": state["step"], "train_loss": round(float(np.mean(losses)), 5),
                  "train_rows": int(len(active))}
        if dev is not None and rank == 0:
            record["dev"] = evaluate(dev)
            if state["best_dev"] is None or record["dev"]["accuracy"] > state["best_dev"]["accuracy"]:
                state["best_dev"] = {**record["dev"], "epoch": epoch + 1}
        state["times"]["eval"] += time.perf_counter() - t0
        state["epoch"] = epoch + 1
        if rank == 0:  # metrics and checkpoints from rank 0; the others wait for them
            log(record)
            if cfg.checkpoint:
                save_checkpoint()
        parallel.barrier(world)

    if rank != 0:
        parallel.barrier(world)
        return DistillResult(out, state["best_dev"] or {}, None, {})
    test_metrics = None
    if test is not None:
        t0 = time.perf_counter()
        test_metrics = evaluate(test)
        state["times"]["eval"] += time.perf_counter() - t0
        log({"final": True, "test": test_metrics})
    final = out / "student"
    tmp = temp_name(final)
    clean_stale(final)
    if rows.label_names:  # the student's logit i means the training rows' class i, by name
        student.config.id2label = dict(enumerate(rows.label_names))
        student.config.label2id = {n: i for i, n in enumerate(rows.label_names)}
    save_model(student.to("cpu"), tokenizer, tmp)
    replace_path(tmp, final)
    summary = {
        "best_dev": state["best_dev"], "test": test_metrics, "wall_seconds": round(time.perf_counter() - t_start, 2),
        "seconds": {k: round(v, 2) for k, v in state["times"].items()},
        "student_rows_forward_backward": state["counters"]["train_rows"],
        "student_rows_forward_only": state["counters"]["rescore_rows"] + state["counters"]["eval_rows"],
        "teacher_forwards": state["counters"]["teacher_forwards"], "teacher_cache_keys": [s.key for s in signals],
        "steps": state["step"], "train_pool_rows": len(all_rows), "dev": data.dev_source, "selectkd_version": __version__,
    }
    atomic_write_json(out / "summary.json", summary)
    parallel.barrier(world)
    return DistillResult(out, state["best_dev"] or {}, test_metrics, summary)


def _margin(z):
    import torch

    top2 = torch.topk(torch.softmax(z.detach(), -1), 2, dim=-1).values
    return top2[:, 0] - top2[:, 1]
