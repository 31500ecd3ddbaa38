"""What each stage is asked to do, as one value per stage, passed whole from the CLI to the library.

A command parses its options into these specs and nothing else travels as loose keywords:
``score(data, scoring)``, ``select(data, scoring, selecting)``, a distill run holds all four.
Cache keys are derived from them (``selectkd.cache.keys``): every field counts unless it is on
that key's explicit ignore list, so a new field cannot be forgotten in a key.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_STRATEGY = "random"  # measured best at 10% with full KD's step count: bench/results/matched_steps.md
DEFAULT_CRITERION = "entropy"
DEFAULT_CLUSTERS = 30


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


@dataclass(frozen=True)
class TrainSpec:
    """How the student is trained: the optimiser, the schedule and the loss terms."""

    epochs: int = 3
    lr: float = 2e-5
    batch_size: int = 32
    warmup: float = 0.1
    seed: int = 0
    kd_loss: str = "mse"
    temperature: float = 1.0  # of the KD loss (KL); selection's sampling has its own
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
