"""lever-plugins: LEVER soft-label distillation for extreme classification, as pluggy hooks."""

from lever_plugins.hookspecs import hookimpl, hookspec

__version__ = "0.1.0"

__all__ = ["hookimpl", "hookspec", "__version__"]
