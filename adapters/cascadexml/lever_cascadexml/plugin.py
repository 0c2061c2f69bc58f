"""Entry point of group ``lever``: registers the ``cascadexml`` adapter.

The adapter module imports only numpy/scipy at import time; torch, transformers and scikit-learn are
imported when an arm is prepared, so ``lever plugins`` stays fast.
"""

from __future__ import annotations

from lever_cascadexml.adapter import CascadeXMLAdapter
from lever_plugins import hookimpl


@hookimpl
def lever_register_adapters(register):
    register("cascadexml", CascadeXMLAdapter)
