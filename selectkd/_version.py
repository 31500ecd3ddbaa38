"""The version, in one place: modules import it from here, never from the package."""

__version__ = "0.1.0"
