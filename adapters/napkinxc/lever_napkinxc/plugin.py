"""Entry point of group ``lever``: registers the ``napkinxc`` adapter.

The adapter module imports only numpy/scipy at import time; napkinxc and scikit-learn are imported
when a model is trained, so ``lever plugins`` stays fast.
"""

from __future__ import annotations

from lever_napkinxc.adapter import NapkinxcAdapter
from lever_plugins import hookimpl


@hookimpl
def lever_register_adapters(register):
    register("napkinxc", NapkinxcAdapter)
