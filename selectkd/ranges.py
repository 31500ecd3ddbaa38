"""The valid range of every numeric option, and the one check every command runs up front.

A NaN learning rate or a zero temperature does not fail loudly: it trains to NaN weights and
saves them. So each command checks its numbers before any work, with a message that names the
option and the range (``--lr nan is not a finite number; give a number > 0``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .errors import OptionError


@dataclass(frozen=True)
class Range:
    """``low``/``high`` bounds (None: unbounded), open or closed; ``integer`` asks for a whole number."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def text(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            return f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {self.high:g}"
        return f"a finite {kind.split()[-1]}"

    def holds(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))


POSITIVE = Range(0, low_open=True)  # learning rates, temperatures
NON_NEGATIVE = Range(0)  # loss weights (alphas), distances
FRACTION = Range(0, 1, low_open=True)  # (0, 1]: a share of rows
WARMUP = Range(0, 1, high_open=True)  # [0, 1): a share of the steps spent warming up
HOLDOUT = Range(0, 1, high_open=True)  # [0, 1): 0 holds nothing out
COUNT = Range(1, integer=True)  # epochs, batch sizes, clusters, rows
SEED = Range(0, integer=True)
NON_NEGATIVE_INT = Range(0, integer=True)  # --min-steps: 0 adds no steps
ROW_LIMIT = Range(0, integer=True)  # --eval-limit / --test-limit: 0 skips that evaluation
MAX_LENGTH = Range(2, integer=True)  # room for [CLS] and [SEP]


def check_range(option: str, value: object, valid: Range) -> None:
    """Raise ``OptionError`` naming ``option`` unless ``value`` is finite and inside ``valid`` (None passes)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(f"{option} {value!r} is not a number; give {valid.text()}")
    number = float(value)
    shown = str(value) if isinstance(value, numbers.Integral) else f"{number:g}"
    if not math.isfinite(number):
        raise OptionError(f"{option} {shown} is not a finite number; give {valid.text()}")
    if (valid.integer and not number.is_integer()) or not valid.holds(number):
        raise OptionError(f"{option} {shown} is out of range; give {valid.text()}")


def check_ranges(checks: dict[str, tuple[object, Range]]) -> None:
    """``check_range`` for every ``{option: (value, range)}``, in order: the first bad one is reported."""
    for option, (value, valid) in checks.items():
        check_range(option, value, valid)
