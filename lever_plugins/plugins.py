"""Plugin manager: the built-in plugin plus every plugin of the entry-point group ``lever``.

``LEVER_LOAD_PLUGINS=dist1,dist2`` restricts third-party loading to the named distributions (an empty
value loads none), as simonw/llm does with LLM_LOAD_PLUGINS.
"""

from __future__ import annotations

import importlib.metadata as md
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

from lever_plugins import hookspecs
from lever_plugins.errors import PluginError

GROUP = "lever"
BUILTIN_DIST = "lever-plugins"
BUILTIN_MODULES = ("lever_plugins.builtin",)


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
    import importlib

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
