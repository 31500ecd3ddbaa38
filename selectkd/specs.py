"""What each stage is asked to do, as one value per stage, passed whole from the CLI to the library.

A command parses its options into these specs and nothing else travels as loose keywords:
``score(data, scoring)``, ``select(data, scoring, selecting)``, a distill run holds all four.
Cache keys are derived from them (``selectkd.cache.keys``): every field counts unless it is on
that key's explicit ignore list, so a new field cannot be forgotten in a key.
"""

from __future__ import annotations

from dataclasses import dataclass

# The peak learning rate of `finetune` and `distill`. BERT's 2e-5 suits 110M-parameter encoders trained for
# thousands of steps; the small encoders selectkd distils (all-MiniLM-L6-v2 and its first layers) stayed
# at the majority class with it (distill: test 0.706 = majority, 2 epochs on 3,000 tweets, 2 seeds) and
# trained at 1e-4 (median 0.840): bench/results/defaults.md. distill then moved to 3e-4 by the rule in
# bench/results/lr.md (the 10% study's own runs, tweets and 20ng, 3 seeds: the default 10% run +4.9 points on
# average, full-data KD -0.1 at worst); tests/test_recipes.py holds this value to lr.md's choice.
# The two are separate values: a measured change of distill's rate must not move finetune's.
DEFAULT_LR = 3e-4
DEFAULT_FINETUNE_LR = 1e-4
# KD loss: T^2 * KL(teacher || student) at T=2 against MSE between raw logits, with a fine-tuned teacher:
# test median 0.840 vs 0.833 over 2 seeds (no KD 0.845): bench/results/defaults.md.
DEFAULT_KD_LOSS = "kl"
DEFAULT_TEMPERATURE = 2.0
DEFAULT_MIN_STEPS = 100  # a 10% subset's few dozen steps leave a fresh student at the majority class
# The student's head: "auto" = "probe" (a linear probe on the teachers' soft labels, then fine-tune) when
# it trains on a subset, transformers' fresh "random" head on all rows. Measured on the 10% study's own
# runs (bench/results/head_init.md): the probe start helps the default 10% run (tweets and r8) and holds
# full-data KD back on r8 by ~7 points (it settles on the large classes); on tweets it is level there.
DEFAULT_HEAD_INIT = "auto"
DEFAULT_STRATEGY = "random"  # no strategy beat it at 10% and equal time on both datasets so far: docs/RESULTS.md
DEFAULT_CRITERION = "entropy"
# A bare --budget re-chooses its rows every epoch (1); 0 keeps the first choice, made from the cached scores
# (a static selection). The study (bench/results/reproduce/budget_strategy.json) decides between them.
DEFAULT_RESELECT_EVERY = 1
DEFAULT_CLUSTERS = 30
DEFAULT_PRUNE_HARD = 0.2  # ccs: the share of each class dropped as too hard or mislabelled (CCS: 0.1..0.4)
DEFAULT_BINS = 10  # ccs: difficulty bins by teacher margin


@dataclass(frozen=True)
class DataSpec:
    """Where the rows come from and which fields hold text and label."""

    data: str
    split: str = "train"
    text_field: str = "text"
    text_pair_field: str | None = None
    label_field: str = "label"
    limit: int | None = None
    label_names: tuple[str, ...] | None = None  # map string labels to these ids (the training rows' names)


@dataclass(frozen=True)
class ScoreSpec:
    """Which models run over the rows, and everything about how that changes their numbers."""

    teachers: tuple[str, ...] = ()
    student: str | None = None
    max_length: int = 128
    batch_size: int = 64
    cls_states: bool = False
    student_head: str = "probe"  # probe: fitted on frozen embeddings to the teachers' soft labels; as-is
    allow_untrained_head: bool = False
    probe_l2: float = 1e-3
    probe_max_iter: int = 200
    device: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:  # a list given by a caller is stored as a tuple: specs are hashable values
        object.__setattr__(self, "teachers", tuple(self.teachers))


@dataclass(frozen=True)
class SelectSpec:
    """How a subset is chosen from a scored pool (``selectkd select --list`` names the strategies)."""

    strategy: str = DEFAULT_STRATEGY
    budget: float | int = 0.1  # a fraction in (0, 1] or a row count >= 2
    criterion: str = DEFAULT_CRITERION  # coverage's ranking inside clusters
    clusters: int = DEFAULT_CLUSTERS
    per_class: bool = False
    sample: bool = False
    sample_temperature: float = 1.0
    drop_disagreement: bool = False
    disagreement_threshold: float = 0.9
    dedup: float | None = None
    seed: int = 0
    prune_hard: float = DEFAULT_PRUNE_HARD  # ccs
    bins: int = DEFAULT_BINS  # ccs


@dataclass(frozen=True)
class TrainSpec:
    """How the student is trained: the optimiser, the schedule and the loss terms."""

    epochs: int = 3
    lr: float = DEFAULT_LR
    batch_size: int = 32
    warmup: float = 0.1
    seed: int = 0
    kd_loss: str = DEFAULT_KD_LOSS
    temperature: float = DEFAULT_TEMPERATURE  # of the KD loss (KL); selection's sampling has its own
    ce_alpha: float = 1.0
    kd_alpha: float = 1.0
    adoption: str | None = None
    objective: str = "none"
    pt_alpha: float = 0.0
    live_teacher: bool = False
    checkpoint: bool = True
    holdout: float = 0.1  # of the training rows, as dev, when no dev data is given or found
    max_steps: int | None = None  # train exactly this many steps (epochs repeat as needed); None: epochs
    time_budget: float | None = None  # stop once the training seconds reach this; None: no limit
    eval_every: int | None = None  # log dev scores every N steps; None: after each epoch only
    min_steps: int = DEFAULT_MIN_STEPS  # without --max-steps, epochs are added until the run has this many steps
    head_init: str = DEFAULT_HEAD_INIT  # probe: the head starts fitted to the teachers' soft labels; random
