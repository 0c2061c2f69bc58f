"""Entry point of group ``lever``: registers the ``napkinxc`` adapter and the ``plt`` reference baseline.

The adapter module imports only numpy/scipy at import time; napkinxc and scikit-learn are imported
when a model is trained, so ``lever plugins`` stays fast.
"""

from __future__ import annotations

from lever_napkinxc.adapter import NapkinxcAdapter
from lever_napkinxc.reference import PltReference
from lever_plugins import hookimpl


@hookimpl
def lever_register_adapters(register):
    register("napkinxc", NapkinxcAdapter)


@hookimpl
def lever_register_baselines(register):
    register("plt", PltReference)
