"""selectkd: pay for each teacher once, then make every distillation experiment cheap."""

__version__ = "0.1.0"

from .errors import SelectKDError  # noqa: E402
from .score import score  # noqa: E402
from .store import Store  # noqa: E402
from .select import load_selection, select  # noqa: E402
from .export import export  # noqa: E402

__all__ = ["SelectKDError", "Store", "export", "load_selection", "score", "select", "__version__"]
