"""selectkd: pay for each teacher once, then make every distillation experiment cheap.

The stages live in packages named for the data flow: ``data`` -> ``scoring`` (into the
``cache``) -> ``selection`` -> ``distillation``. Each command is one call here.
"""

from ._version import __version__
from .cache.store import Store
from .errors import SelectKDError
from .scoring.run import score
from .selection.export import export
from .selection.run import select
from .selection.saved import load_selection

__all__ = ["SelectKDError", "Store", "export", "load_selection", "score", "select", "__version__"]
