"""Entry point of group ``lever``: registers the ``xreg`` adapter (imports numpy/scipy only)."""

from __future__ import annotations

from lever_plugins import hookimpl
from lever_xreg.adapter import XregAdapter


@hookimpl
def lever_register_adapters(register):
    register("xreg", XregAdapter)
