"""selectkd: pay for each teacher once, then make every distillation experiment cheap.

The stages live in packages named for the data flow: ``data`` -> ``scoring`` (into the
``cache``) -> ``selection`` -> ``distillation``. Each command is one call here, given the specs
it parsed: ``score(DataSpec(...), ScoreSpec(...))``.
"""

from ._version import __version__
from .cache.store import Store
from .errors import SelectKDError
from .scoring.run import score
from .selection.export import export
from .selection.run import select
from .selection.saved import load_selection
from .specs import DataSpec, ScoreSpec, SelectSpec, TrainSpec

__all__ = ["DataSpec", "ScoreSpec", "SelectKDError", "SelectSpec", "Store", "TrainSpec", "distill", "export",
           "finetune", "load_selection", "score", "select", "__version__"]


def __getattr__(name: str):
    """``distill`` and ``finetune`` import torch: only when asked for, so `selectkd cache ls` stays quick."""
    if name == "distill":
        from .distillation.loop import distill

        return distill
    if name == "finetune":
        from .finetune import finetune

        return finetune
    raise AttributeError(f"module 'selectkd' has no attribute {name!r}")
