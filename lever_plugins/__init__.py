"""lever-plugins: LEVER soft-label distillation for extreme classification, as pluggy hooks.

The plugin contract: :mod:`lever_plugins.hookspecs` (the hooks) and :mod:`lever_plugins.adapter`
(:class:`Arm`, :class:`Adapter`), re-exported here; the Python API (:mod:`lever_plugins.api`): :func:`ab`,
:func:`sweep`, :func:`evaluate`, imported on first use so that ``import lever_plugins`` stays cheap.
"""

from typing import Any

from lever_plugins.hookspecs import hookimpl, hookspec

__version__ = "0.1.0"

_API = ("ab", "sweep", "evaluate", "load_config", "ABResult", "SweepResult", "EvalResult")

__all__ = ["Adapter", "Arm", "LossFn", "hookimpl", "hookspec", "__version__", *_API]


def __getattr__(name: str) -> Any:
    # lazily: `lever --help` and plugin listing should not pay for numpy/scipy
    if name in ("Adapter", "Arm", "LossFn"):
        from lever_plugins import adapter

        return getattr(adapter, name)
    if name in _API:
        from lever_plugins import api

        return getattr(api, name)
    raise AttributeError(f"module 'lever_plugins' has no attribute {name!r}")
