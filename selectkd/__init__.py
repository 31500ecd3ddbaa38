"""selectkd: pay for each teacher once, then make every distillation experiment cheap."""

__version__ = "0.1.0"

from .errors import SelectKDError  # noqa: E402
from .score import score  # noqa: E402
from .store import Store  # noqa: E402

__all__ = ["SelectKDError", "Store", "score", "__version__"]
