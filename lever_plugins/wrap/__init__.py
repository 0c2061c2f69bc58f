"""Running an upstream XC trainer with LEVER's targets: contracts, reversible patches, the launcher.

The pieces an adapter distribution builds on (see ``adapters/*`` for real ones):

- :mod:`.contract` — the upstream symbols an adapter patches, checked statically (ast) before anything runs;
- :mod:`.patching` — reversible patches, applied when their module is imported (in every process);
- :mod:`.launch` — runs the upstream entry point in a child Python with the patches active;
- :mod:`.adapter` — :class:`WrapAdapter`, the base class tying them to ``lever wrap`` and ``lever ab``.
"""

from lever_plugins.adapter import Arm
from lever_plugins.wrap.adapter import LaunchSpec, WrapAdapter
from lever_plugins.wrap.contract import SourceText, Symbol, check_contract, identify_commit
from lever_plugins.wrap.patching import Patch, patched

__all__ = [
    "Arm",
    "LaunchSpec",
    "Patch",
    "SourceText",
    "Symbol",
    "WrapAdapter",
    "check_contract",
    "identify_commit",
    "patched",
]
