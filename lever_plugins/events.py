"""Run events from inside a stage: trainers and teachers report progress without knowing the run or who listens.

:func:`lever_plugins.stages.cached_stage` binds the run and the stage name while a stage computes; code
running inside it (the built-in teacher's and trainer's epoch loops, any plugin) calls :func:`emit`, which
fires the ``lever_run_event`` hook with ``payload["stage"]`` set. Outside a stage (a library call, a
launched upstream process) :func:`emit` does nothing. Events the core emits (payload keys):

- ``stage_start`` / ``stage_end``: ``stage`` (and ``seconds``, ``key``, ``cached`` at the end);
- ``epoch``: ``stage`` ("teacher", "train_base", "train_lever", ...), ``what`` ("teacher" or "trainer"),
  ``epoch`` (1-based), ``loss`` (mean training loss of the epoch), ``docs_per_s`` (training rows per
  second), ``seconds``; with early stopping the trainer then emits ``valid`` (``epoch``, ``valid_p1``);
- ``artifact``: ``stage``, ``path`` (absolute), ``name`` (relative to the run folder), once per artefact a
  stage has just written (not for cached stages);
- ``metrics``: ``arm``, ``metrics`` (the arm's metrics.json).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_current: contextvars.ContextVar[tuple[Any, str] | None] = contextvars.ContextVar("lever_stage", default=None)


@contextlib.contextmanager
def bound(run: Any, stage: str) -> Iterator[None]:
    """Events emitted inside the block belong to ``run`` and ``stage``."""
    token = _current.set((run, stage))
    try:
        yield
    finally:
        _current.reset(token)


def current() -> tuple[Any, str] | None:
    """(run, stage) of the stage computing now, or None."""
    return _current.get()


def emit(event: str, **payload: Any) -> None:
    """Fire ``lever_run_event(run, event, payload)`` for the stage computing now (nothing outside one, and
    only on the main rank under torchrun)."""
    bound_to = _current.get()
    if bound_to is None:
        return
    from lever_plugins import distributed as dist
    from lever_plugins import plugins

    if not dist.is_main():
        return
    run, stage = bound_to
    with plugins.guard_hook("lever_run_event"):
        plugins.get_plugin_manager().hook.lever_run_event(run=run, event=event, payload={"stage": stage, **payload})
