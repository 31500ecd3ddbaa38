"""The one error family users see: the CLI prints it as a single line, exit code 2."""


class SelectKDError(Exception):
    """A problem with the user's input or cache, with the fix in the message."""


class DataError(SelectKDError):
    """The dataset cannot be used as given (field, label, split, file)."""


class ModelError(SelectKDError):
    """A model cannot be used as given (path, head, label count)."""


class CacheError(SelectKDError):
    """A cache entry is damaged, locked or incompatible."""


class SelectKDWarning(UserWarning):
    """Something the user may want to stop for (it is about to redo cached work); the CLI prints one line."""
