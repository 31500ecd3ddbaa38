"""What decides a distill run: the specs of each stage plus the run's own options, checked before any
work, and the run folder that records them (RUN_DIR/config.json) so a run can be resumed or reused.

RUN_DIR/config.json keeps the command's options by name (``DistillConfig.options()``), the same flat
shape runs have always saved: an older run is still compared, resumed and reused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..atomic import atomic_write_json, clean_stale, discard
from ..cache.store import Store
from ..errors import SelectKDError
from ..outputs import RUN, check_output
from ..ranges import COUNT, FRACTION, HOLDOUT, MAX_LENGTH, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, ROW_LIMIT, SEED, WARMUP, check_ranges
from ..specs import (DEFAULT_BINS, DEFAULT_CLUSTERS, DEFAULT_PRUNE_HARD, DEFAULT_CRITERION, DEFAULT_HEAD_INIT, DEFAULT_KD_LOSS, DEFAULT_LR,
                     DEFAULT_MIN_STEPS, DEFAULT_RESELECT_EVERY, DEFAULT_STRATEGY, DEFAULT_TEMPERATURE, DataSpec, ScoreSpec, SelectSpec, TrainSpec)
from ..selection.choose import PRUNE
from ..selection.strategies import IN_BATCH_CRITERIA
from .active import RESCORE_BY
from .head import HEAD_INITS, resolved_head_init
from .losses import ADOPTIONS, KD_LOSSES, OBJECTIVES

# The command's options (config.json's keys) and their defaults; data, teachers, student and out are required.
REQUIRED_OPTIONS = ("data", "teachers", "student", "out")
OPTION_DEFAULTS: dict = {
    "split": "train", "eval_data": None, "eval_split": "dev", "test_data": None, "test_split": "test",
    "text_field": "text", "text_pair_field": None, "label_field": "label", "limit": None, "eval_limit": None,
    "test_limit": None, "holdout": 0.1,
    # selection
    "selection": None, "budget": None, "strategy": DEFAULT_STRATEGY, "criterion": DEFAULT_CRITERION,
    "clusters": DEFAULT_CLUSTERS, "per_class": False, "sample": False, "sample_temperature": 1.0,
    "prune_hard": DEFAULT_PRUNE_HARD, "bins": DEFAULT_BINS, "reselect_every": DEFAULT_RESELECT_EVERY,
    "rescore_pool": 1.0, "rescore_by": "random", "in_batch": None,
    # losses
    "kd_loss": DEFAULT_KD_LOSS, "temperature": DEFAULT_TEMPERATURE, "ce_alpha": 1.0, "kd_alpha": 1.0, "adoption": None, "objective": "none",
    "pt_alpha": 0.0, "live_teacher": False,
    # optimisation and models
    "epochs": 3, "lr": DEFAULT_LR, "batch_size": 32, "max_length": 128, "warmup": 0.1, "seed": 0, "checkpoint": True,
    "max_steps": None, "time_budget": None, "eval_every": None, "min_steps": DEFAULT_MIN_STEPS,
    "head_init": DEFAULT_HEAD_INIT,
    "cache_dir": None, "device": None, "trust_remote_code": False, "allow_untrained_head": False,
}
TRAIN_OPTIONS = ("epochs", "lr", "batch_size", "warmup", "seed", "kd_loss", "temperature", "ce_alpha", "kd_alpha",
                 "adoption", "objective", "pt_alpha", "live_teacher", "checkpoint", "holdout",
                 "max_steps", "time_budget", "eval_every", "min_steps", "head_init")
SELECT_OPTIONS = ("strategy", "criterion", "clusters", "per_class", "sample", "sample_temperature", "prune_hard", "bins")
RUN_OPTIONS = ("eval_data", "eval_split", "test_data", "test_split", "eval_limit", "test_limit", "selection",
               "in_batch", "reselect_every", "rescore_pool", "rescore_by", "cache_dir")


@dataclass
class DistillConfig:
    """Everything that decides a run: the specs, passed whole, plus what only a run has.

    ``scoring.student`` is the student trained; ``selecting`` (dynamic selection: re-chosen with the
    current student every ``reselect_every`` epochs, or never when 0) is None in the other modes: a saved
    ``selection`` (static), ``in_batch`` (KD on the top fraction of each batch) or full-data KD.
    """

    data: DataSpec
    scoring: ScoreSpec
    out: str
    train: TrainSpec = field(default_factory=TrainSpec)
    selecting: SelectSpec | None = None
    selection: str | None = None
    in_batch: float | None = None
    in_batch_criterion: str = DEFAULT_CRITERION
    reselect_every: int = DEFAULT_RESELECT_EVERY
    rescore_pool: float = 1.0
    rescore_by: str = "random"
    eval_data: str | None = None
    eval_split: str = "dev"
    test_data: str | None = None
    test_split: str = "test"
    eval_limit: int | None = None
    test_limit: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        # --head-init auto is recorded as what it does for this run (config.json, the resume check)
        head = resolved_head_init(self.train.head_init, self.selecting is not None or self.selection is not None)
        if head != self.train.head_init:
            self.train = replace(self.train, head_init=head)

    @classmethod
    def from_options(cls, **options) -> DistillConfig:
        """The config of `selectkd distill` with these options (config.json's flat names)."""
        from ..selection.choose import parse_budget

        unknown = set(options) - set(OPTION_DEFAULTS) - set(REQUIRED_OPTIONS)
        missing = set(REQUIRED_OPTIONS) - set(options)
        if unknown or missing:
            raise TypeError(f"DistillConfig options: unknown {sorted(unknown)}, missing {sorted(missing)}")
        o = {**OPTION_DEFAULTS, **options}
        data = DataSpec(o["data"], o["split"], o["text_field"], o["text_pair_field"], o["label_field"], o["limit"])
        scoring = ScoreSpec(teachers=tuple(o["teachers"]), student=o["student"], max_length=o["max_length"],
                            cls_states=o["pt_alpha"] > 0 and not o["live_teacher"],
                            allow_untrained_head=o["allow_untrained_head"], device=o["device"],
                            trust_remote_code=o["trust_remote_code"])
        selecting = None
        if o["budget"] is not None and o["budget"] != "":
            selecting = SelectSpec(**{k: o[k] for k in SELECT_OPTIONS}, budget=parse_budget(o["budget"]), seed=o["seed"])
        return cls(data, scoring, str(o["out"]), TrainSpec(**{k: o[k] for k in TRAIN_OPTIONS}), selecting,
                   in_batch_criterion=o["criterion"], **{k: o[k] for k in RUN_OPTIONS})

    def options(self) -> dict:
        """The command's options that give this config (``from_options``'s inverse): config.json."""
        d, s, t, sel = self.data, self.scoring, self.train, self.selecting
        chosen = ({"budget": budget_text(sel.budget), **{k: getattr(sel, k) for k in SELECT_OPTIONS}} if sel
                  else {"criterion": self.in_batch_criterion})
        return {**OPTION_DEFAULTS, "data": d.data, "teachers": list(s.teachers), "student": s.student, "out": self.out,
                "split": d.split, "text_field": d.text_field, "text_pair_field": d.text_pair_field,
                "label_field": d.label_field, "limit": d.limit, "max_length": s.max_length, "device": s.device,
                "trust_remote_code": s.trust_remote_code, "allow_untrained_head": s.allow_untrained_head,
                **{k: getattr(t, k) for k in TRAIN_OPTIONS}, **{k: getattr(self, k) for k in RUN_OPTIONS}, **chosen}


def budget_text(budget: float | int | str | None) -> str | None:
    """A budget as the command takes it ('0.1', '300'); given as text, its meaning (`parse_budget`)."""
    if budget is None:
        return None
    from ..selection.choose import parse_budget

    try:
        return str(parse_budget(budget))
    except SelectKDError:
        return str(budget)


def is_run_config(saved: dict) -> bool:
    """Whether a folder's config.json is a distill run's (``selectkd.outputs`` asks before --overwrite)."""
    return bool(saved) and set(REQUIRED_OPTIONS) <= set(saved) <= set(REQUIRED_OPTIONS) | set(OPTION_DEFAULTS)


# -- checks before any work ---------------------------------------------------------------------------

def check_config(cfg: DistillConfig) -> None:
    """Refuse what cannot run (or would train to NaN) before any data is read or any folder made."""
    t, sel = cfg.train, cfg.selecting
    modes = [m for m, on in (("--selection", cfg.selection), ("--budget", sel), ("--in-batch", cfg.in_batch)) if on]
    if len(modes) > 1:
        raise SelectKDError(f"{' and '.join(modes)} are different selection modes; choose one")
    if not cfg.scoring.teachers:
        raise SelectKDError("distillation needs a teacher; give --teacher")
    check_ranges({
        "--lr": (t.lr, POSITIVE), "--temperature": (t.temperature, POSITIVE), "--ce-alpha": (t.ce_alpha, NON_NEGATIVE),
        "--kd-alpha": (t.kd_alpha, NON_NEGATIVE), "--pt-alpha": (t.pt_alpha, NON_NEGATIVE),
        "--warmup": (t.warmup, WARMUP), "--epochs": (t.epochs, COUNT), "--batch-size": (t.batch_size, COUNT),
        "--max-length": (cfg.scoring.max_length, MAX_LENGTH), "--seed": (t.seed, SEED), "--holdout": (t.holdout, HOLDOUT),
        "--max-steps": (t.max_steps, COUNT), "--time-budget": (t.time_budget, POSITIVE),
        "--eval-every": (t.eval_every, COUNT), "--min-steps": (t.min_steps, NON_NEGATIVE_INT),
        "--in-batch": (cfg.in_batch, FRACTION), "--reselect-every": (cfg.reselect_every, NON_NEGATIVE_INT),
        "--rescore-pool": (cfg.rescore_pool, FRACTION), "--limit": (cfg.data.limit, COUNT),
        "--eval-limit": (cfg.eval_limit, ROW_LIMIT), "--test-limit": (cfg.test_limit, ROW_LIMIT),
        **({"--clusters": (sel.clusters, COUNT), "--sample-temperature": (sel.sample_temperature, POSITIVE),
            "--prune-hard": (sel.prune_hard, PRUNE), "--bins": (sel.bins, COUNT)} if sel else {}),
    })
    if t.head_init not in HEAD_INITS:
        raise SelectKDError(f"unknown --head-init {t.head_init!r}; valid: {', '.join(HEAD_INITS)}")
    if t.kd_loss not in KD_LOSSES:
        raise SelectKDError(f"unknown --kd-loss {t.kd_loss!r}; valid: {', '.join(KD_LOSSES)}")
    if t.adoption is not None:
        if t.adoption not in ADOPTIONS:
            raise SelectKDError(f"unknown --adoption {t.adoption!r}; valid: {', '.join(ADOPTIONS)}")
        if len(cfg.scoring.teachers) < 2:
            raise SelectKDError("--adoption chooses between teachers; give two --teacher (a small and a large one)")
        if t.objective != "none":
            raise SelectKDError("--adoption and --objective are not combined (the paper never does); use one")
    if t.objective not in OBJECTIVES:
        raise SelectKDError(f"unknown --objective {t.objective!r}; valid: {', '.join(OBJECTIVES)}")
    if t.objective != "none" and t.pt_alpha <= 0:
        raise SelectKDError(f"--objective {t.objective} weighs hidden-state alignment; give --pt-alpha > 0")
    if t.live_teacher and t.pt_alpha <= 0:
        raise SelectKDError("--live-teacher runs the teacher for token-level alignment; give --pt-alpha > 0")
    if cfg.in_batch is not None and cfg.in_batch_criterion not in IN_BATCH_CRITERIA:
        raise SelectKDError(f"in-batch --criterion must be one of {', '.join(IN_BATCH_CRITERIA)}")
    if sel:
        from ..selection.choose import check_budget
        from ..selection.strategies import get_strategy

        check_budget(sel.budget)
        get_strategy(sel.strategy)  # an unknown name is refused before the run folder is made
    if cfg.rescore_by not in RESCORE_BY:
        raise SelectKDError(f"unknown --rescore-by {cfg.rescore_by!r}; valid: {', '.join(RESCORE_BY)}")


# -- the run folder -----------------------------------------------------------------------------------

def dev_holdout(cfg: DistillConfig, root: Path) -> float:
    """The fraction of the training rows held out as dev: ``cfg.train.holdout`` when no other dev data
    is given or found (no --eval-data, no dev split, --eval-limit not 0), else none."""
    from ..data.sources import has_split

    if cfg.eval_data or cfg.eval_limit == 0 or has_split(cfg.data.data, cfg.eval_split, root):
        return 0.0
    return cfg.train.holdout


def run_config(cfg: DistillConfig) -> dict:
    """What RUN_DIR/config.json records: the options as JSON, with the holdout that applies to them."""
    return json.loads(json.dumps({**cfg.options(), "holdout": dev_holdout(cfg, Store(cfg.cache_dir).root)}))


# A field a saved config lacks counts as the value that does what runs did before the field existed.
BEFORE_FIELD = {"holdout": 0.0, "min_steps": 0, "head_init": "random"}


def config_diff(saved: dict, now: dict) -> list[str]:
    """The settings in which a run's saved config.json and ``now`` (``run_config``) differ."""
    before = {**json.loads(json.dumps(OPTION_DEFAULTS)), **BEFORE_FIELD}
    saved = {**saved, "budget": budget_text(saved.get("budget"))}  # '0.50' and '0.5' are one budget
    return sorted({k for k, v in now.items() if saved.get(k, before.get(k, KeyError)) != v} | (set(saved) - set(now)))


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
        discard(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(saved, config)


def finished_summary(out: str | Path, cfg: DistillConfig) -> dict | None:
    """The summary of a run in ``out`` that finished with exactly ``cfg``, else None.

    A field the saved config lacks counts as what runs did before it existed (``BEFORE_FIELD``,
    else its default): an option added since the run did not change what the run did.
    """
    out = Path(out)
    try:
        saved = json.loads((out / "config.json").read_text())
        summary = json.loads((out / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return None if config_diff(saved, run_config(cfg)) else summary
