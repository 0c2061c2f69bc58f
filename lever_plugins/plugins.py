"""Plugin manager: the built-in plugin plus every plugin of the entry-point group ``lever``.

``LEVER_LOAD_PLUGINS=dist1,dist2`` restricts third-party loading to the named distributions (an empty
value loads none), as simonw/llm does with LLM_LOAD_PLUGINS.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata as md
import inspect
import os
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from lever_plugins import hookspecs
from lever_plugins.errors import ConfigError, LeverError, PluginError, PluginFailure

GROUP = "lever"
BUILTIN_DIST = "lever-plugins"
BUILTIN_MODULES = ("lever_plugins.builtin",)


class LazyFactory:
    """A factory named by ``"module:attr"``, imported on first call (listing plugins stays cheap);
    ``resolve()`` gives the real callable, whose signature the options are checked against."""

    def __init__(self, target: str):
        self.target = target
        self.__name__ = self.__qualname__ = target.partition(":")[2]

    def resolve(self) -> Callable[..., Any]:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


@dataclass(frozen=True)
class Registered:
    name: str
    factory: Callable[..., Any]
    plugin: str
    dist: str
    version: str


@dataclass(frozen=True)
class PluginInfo:
    name: str
    dist: str
    version: str
    hooks: tuple[str, ...]


_pm: pluggy.PluginManager | None = None
_dists: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "unknown"


def _allowed() -> set[str] | None:
    raw = os.environ.get("LEVER_LOAD_PLUGINS")
    if raw is None:
        return None
    return {d.strip().lower().replace("_", "-") for d in raw.split(",") if d.strip()}


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager, built on first use."""
    global _pm
    if _pm is None:
        _pm = build_plugin_manager()
    return _pm


def reset() -> None:
    """Forget the cached manager (tests, or after installing a plugin in-process)."""
    global _pm
    _pm = None
    _dists.clear()


def build_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("lever")
    pm.add_hookspecs(hookspecs)
    for modname in BUILTIN_MODULES:
        mod = importlib.import_module(modname)
        pm.register(mod, name=modname)
        _dists[modname] = (BUILTIN_DIST, _version(BUILTIN_DIST))
    allowed = _allowed()
    for ep in md.entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist is not None else "unknown"
        if allowed is not None and dist.lower().replace("_", "-") not in allowed:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party plugin must not look like our bug
            raise PluginError(
                f"plugin {ep.name!r} from distribution {dist!r} failed to import: {exc}",
                where=f"entry point {ep.value}",
                fix=f"fix or uninstall {dist}, or set LEVER_LOAD_PLUGINS to exclude it",
            ) from exc
        if pm.is_registered(plugin):
            continue
        pm.register(plugin, name=ep.name)
        _dists[ep.name] = (dist, ep.dist.version if ep.dist is not None else "unknown")
    return pm


def list_plugins(pm: pluggy.PluginManager | None = None) -> list[PluginInfo]:
    pm = pm or get_plugin_manager()
    out = []
    for name, plugin in pm.list_name_plugin():
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or []))
        dist, version = _dists.get(name, ("unknown", "unknown"))
        out.append(PluginInfo(name=name, dist=dist, version=version, hooks=hooks))
    return out


def _registry(hook_name: str, kind: str, pm: pluggy.PluginManager | None = None) -> dict[str, Registered]:
    pm = pm or get_plugin_manager()
    found: dict[str, Registered] = {}
    caller = getattr(pm.hook, hook_name)
    for impl in caller.get_hookimpls():
        plugin_name = impl.plugin_name
        dist, version = _dists.get(plugin_name, ("unknown", "unknown"))

        def register(name: str, factory: Callable[..., Any], _p=plugin_name, _d=dist, _v=version) -> None:
            if name in found:
                prev = found[name]
                raise PluginError(
                    f"{kind} {name!r} is registered twice: by {prev.plugin} (distribution {prev.dist}) "
                    f"and by {_p} (distribution {_d})",
                    fix="uninstall one of them or restrict loading with LEVER_LOAD_PLUGINS",
                )
            found[name] = Registered(name, factory, _p, _d, _v)

        impl.function(register=register)
    return found


def teachers(pm: pluggy.PluginManager | None = None) -> dict[str, Registered]:
    return _registry("lever_register_teachers", "teacher", pm)


def soft_label_providers(pm: pluggy.PluginManager | None = None) -> dict[str, Registered]:
    return _registry("lever_register_soft_label_providers", "soft-label provider", pm)


def adapters(pm: pluggy.PluginManager | None = None) -> dict[str, Registered]:
    return _registry("lever_register_adapters", "adapter", pm)


def baselines(pm: pluggy.PluginManager | None = None) -> dict[str, Registered]:
    return _registry("lever_register_baselines", "baseline", pm)


def lookup(registry: dict[str, Registered], name: str, kind: str, option: str) -> Registered:
    if name not in registry:
        import difflib

        close = difflib.get_close_matches(name, list(registry), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(registry)) or 'none'}"
        raise PluginError(f"unknown {kind} {name!r}", where=option, fix=hint)
    return registry[name]


def plugin_versions(pm: pluggy.PluginManager | None = None) -> list[dict[str, str]]:
    """For run manifests: every loaded plugin with its distribution and version."""
    return [{"plugin": p.name, "dist": p.dist, "version": p.version} for p in list_plugins(pm)]


# ------------------------------------------------------------------ calling plugins


def implementers(hook_name: str, pm: pluggy.PluginManager | None = None) -> list[str]:
    """Names of the plugins implementing ``hook_name``, in call order."""
    pm = pm or get_plugin_manager()
    return [impl.plugin_name for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls())]


def third_party(hook_name: str, pm: pluggy.PluginManager | None = None) -> list[str]:
    """The plugins other than the built-in one implementing ``hook_name``, in call order."""
    return [n for n in implementers(hook_name, pm) if n not in BUILTIN_MODULES]


def loss_plugins(pm: pluggy.PluginManager | None = None) -> list[str]:
    """The third-party plugins implementing ``lever_loss`` (empty: the built-in BCE, the "default loss").
    Any of them may answer, so an adapter whose upstream loss cannot take the hook refuses the run."""
    return third_party("lever_loss", pm)


def installed(plugin_name: str) -> bool:
    """Whether the plugin came from an installed distribution (entry point), so that another Python process
    of the same environment loads it too; the built-in plugin counts as installed."""
    return plugin_name in _dists


def describe(plugin_name: str) -> str:
    """``name (distribution dist)`` for messages."""
    return f"{plugin_name} (distribution {_dists.get(plugin_name, ('unknown',))[0]})"


def _source_files(plugin: Any) -> list[Path]:
    """The installed source files of a plugin: every .py file of the top-level package its module belongs
    to (a plugin often keeps its code beside the module that holds the hooks), or the module file."""
    modname = plugin.__name__ if isinstance(plugin, types.ModuleType) else type(plugin).__module__
    top = sys.modules.get(modname.split(".")[0])
    if top is None:
        return []
    paths = list(getattr(top, "__path__", []) or [])
    if paths:
        return sorted({f for p in paths for f in Path(p).rglob("*.py") if "__pycache__" not in f.parts})
    return [Path(top.__file__)] if getattr(top, "__file__", None) else []


def fingerprint(plugin_name: str, pm: pluggy.PluginManager | None = None) -> dict[str, Any]:
    """What identifies a plugin's code in stage keys and manifests: distribution, version, and the sha256
    of its source files as installed (read now: editing a file changes it). The built-in plugin is the
    core itself, identified by its version (hashing it would make every core edit look like a plugin edit)."""
    pm = pm or get_plugin_manager()
    dist, version = _dists.get(plugin_name, ("unknown", "unknown"))
    out: dict[str, Any] = {"plugin": plugin_name, "dist": dist, "version": version}
    plugin = pm.get_plugin(plugin_name)
    if dist == BUILTIN_DIST or plugin is None:
        return out
    files = _source_files(plugin)
    h = hashlib.sha256()
    root = files[0].parent if files else None
    for f in files:
        h.update(str(f.relative_to(root) if root and f.is_relative_to(root) else f.name).encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    out["sha256"] = h.hexdigest()
    return out


def _failure(who: str, what: str, exc: BaseException) -> PluginFailure:
    detail = " ".join(f"{type(exc).__name__}: {exc}".split())
    if len(detail) > 300:
        detail = detail[:297] + "..."
    return PluginFailure(
        f"{who} failed in {what}: {detail}",
        fix="a bug in the plugin or its input; LEVER_DEBUG=1 shows the traceback",
    )


@contextlib.contextmanager
def guard(reg: Registered, what: str) -> Iterator[None]:
    """An exception raised inside the plugin of ``reg`` becomes one line naming it and its distribution
    (LeverErrors, already one line, pass unchanged). The original is its ``__cause__``: the CLI prints its
    traceback with ``LEVER_DEBUG=1``."""
    try:
        yield
    except LeverError:
        raise
    except Exception as exc:
        who = f"{reg.name!r} (plugin {reg.plugin}, distribution {reg.dist} {reg.version})"
        raise _failure(who, what, exc) from exc


@contextlib.contextmanager
def guard_hook(hook_name: str) -> Iterator[None]:
    """As :func:`guard` for an injection hook: names the plugins that implement it."""
    try:
        yield
    except LeverError:
        raise
    except Exception as exc:
        names = [f"{n} ({_dists.get(n, ('unknown',))[0]})" for n in implementers(hook_name)]
        raise _failure(f"hook {hook_name} (plugins: {', '.join(names)})", "a call", exc) from exc


def check_call(
    reg: Registered, kind: str, where: str, args: tuple, options: dict[str, Any], fixed: dict[str, Any] | None = None
) -> None:
    """``reg.factory(*args, **fixed, **options)`` binds to the factory's signature (``fixed``: what the core
    passes by keyword itself): else one line, exit 2."""
    factory = reg.factory
    target = factory.resolve() if isinstance(factory, LazyFactory) else factory
    fixed = fixed or {}
    try:
        clash = sorted(set(fixed) & set(options))
        if clash:
            raise TypeError(f"{', '.join(clash)} is passed by lever itself")
        inspect.signature(target).bind(*args, **fixed, **options)
    except TypeError as exc:
        raise ConfigError(
            f"{kind} {reg.name!r} does not take options {sorted(options)} (distribution {reg.dist}): {exc}",
            where=where,
            fix="remove them or check the plugin's documentation",
        ) from None
    except ValueError:  # no signature to check (a C callable): let the call decide
        pass
