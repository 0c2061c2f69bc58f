"""Reversible patches on upstream symbols, applied whenever (and in whichever process) their module loads.

A patch is ``"module:Owner.attr"`` plus ``make(original) -> replacement``; ``"module:TABLE[key]"`` patches one
entry of a module-level dict in place (upstream registries that scripts bind with ``from m import TABLE``),
and ``create=True`` lets an attribute be absent (a shim for an API a newer dependency removed). Two ways to apply:

- :func:`patched` — a context manager for in-process use (tests, notebooks): on exit every symbol is
  the original object again;
- :func:`install_on_import` — for launched upstream processes: a ``sys.meta_path`` hook applies each
  patch right after its module executes (or at once if it is already imported), so modules the
  upstream imports later, ``from x import *`` users and ``spawn``-started children all see the patch.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

_MISSING = object()
_ITEM = re.compile(r"^(?P<attr>\w+)\[(?P<key>[^\]]+)\]$")


@dataclass(frozen=True)
class Patch:
    """Replace ``target`` (``"pkg.module:Class.method"`` or ``"pkg.module:function"``) with
    ``make(original)``. ``make`` receives the object it replaces, so wrappers can call through.

    ``"pkg.module:TABLE[key]"`` sets ``TABLE[key]`` in the dict object itself (``make`` gets the old entry or
    None), for upstream registries imported by name. ``create=True`` also allows a missing attribute (as
    :func:`unittest.mock.patch` does): ``make`` then receives None, and restoring deletes the attribute
    again — for shims that put back a name a dependency removed (``transformers.AdamW``)."""

    target: str
    make: Callable[[Any], Any]
    create: bool = False

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def path(self) -> list[str]:
        return self.target.partition(":")[2].split(".")


@dataclass
class Applied:
    patch: Patch
    owner: Any
    name: str
    saved: Any  # the owner's own attribute (``_MISSING`` when inherited or absent), restored verbatim
    original: Any  # what attribute lookup gave before patching (None when absent)
    replacement: Any
    key: Any = _MISSING  # set for ``TABLE[key]`` patches: ``owner`` is then the dict itself


def _owner(module: Any, path: list[str]) -> Any:
    obj = module
    for part in path[:-1]:
        obj = getattr(obj, part)
    return obj


def apply(patch: Patch, module: Any | None = None) -> Applied:
    """Apply one patch now (imports its module unless given) and return what restores it."""
    mod = module if module is not None else importlib.import_module(patch.module)
    item = _ITEM.match(patch.path[-1])
    try:
        owner = _owner(mod, patch.path)
        name = item["attr"] if item else patch.path[-1]
        if item:
            table = getattr(owner, name)
            if not isinstance(table, dict):
                raise AttributeError(f"{name} is a {type(table).__name__}, not a dict")
        else:
            original = getattr(owner, name, None) if patch.create else getattr(owner, name)
    except AttributeError as exc:
        from lever_plugins.errors import UpstreamError

        raise UpstreamError(
            f"cannot patch {patch.target}: {exc}",
            where=getattr(mod, "__file__", patch.module),
            fix="the upstream changed; run `lever doctor` against this checkout",
        ) from None
    if item:
        key = item["key"]
        saved = table.get(key, _MISSING)
        original = None if saved is _MISSING else saved
        replacement = patch.make(original)
        table[key] = replacement
        return Applied(patch, table, name, saved, original, replacement, key)
    saved = vars(owner).get(name, _MISSING) if hasattr(owner, "__dict__") else original
    replacement = patch.make(original)
    setattr(owner, name, replacement)
    return Applied(patch, owner, name, saved, original, replacement)


def restore(applied: Applied) -> None:
    if applied.key is not _MISSING:
        if applied.saved is _MISSING:
            applied.owner.pop(applied.key, None)
        else:
            applied.owner[applied.key] = applied.saved
    elif applied.saved is _MISSING:
        delattr(applied.owner, applied.name)
    else:
        setattr(applied.owner, applied.name, applied.saved)


@contextlib.contextmanager
def patched(patches: Iterable[Patch]) -> Iterator[list[Applied]]:
    """Apply ``patches`` in order; undo them in reverse order on exit, even after an exception."""
    done: list[Applied] = []
    try:
        for p in patches:
            done.append(apply(p))
        yield done
    finally:
        for a in reversed(done):
            restore(a)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of a watched module so patches follow its execution."""

    def __init__(self, by_module: dict[str, list[Patch]], applied: list[Applied]):
        self.by_module = by_module
        self.applied = applied

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.by_module:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module
        patches = self.by_module.pop(fullname)
        applied = self.applied

        def exec_then_patch(module: Any) -> None:
            exec_module(module)
            # A module may replace itself in sys.modules (transformers' _LazyModule): patch what imports see.
            target = sys.modules.get(fullname, module)
            applied.extend(apply(p, target) for p in patches)

        loader.exec_module = exec_then_patch  # type: ignore[method-assign]
        return spec


def install_on_import(patches: Iterable[Patch]) -> list[Applied]:
    """Apply every patch whose module is loaded now, and the rest as their modules load.

    Meant for a launched upstream process (see :mod:`.boot`): it is not undone. The returned list
    fills up as patches land, so a process can report which ones did.
    """
    applied: list[Applied] = []
    pending: dict[str, list[Patch]] = {}
    for p in patches:
        mod = sys.modules.get(p.module)
        if mod is not None and getattr(mod, "__spec__", None) is not None and not _initialising(mod):
            applied.append(apply(p, mod))
        else:
            pending.setdefault(p.module, []).append(p)
    if pending:
        sys.meta_path.insert(0, _PatchOnImport(pending, applied))
    return applied


def _initialising(mod: Any) -> bool:
    return bool(getattr(mod.__spec__, "_initializing", False))
