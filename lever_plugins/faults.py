"""Deterministic fault injection for the crash-safety tests: kill or freeze this process at a named point.

``LEVER_TEST_CRASH_AT=<point>`` makes the process send itself SIGKILL when it reaches ``<point>``;
``LEVER_TEST_STOP_AT=<point>`` makes it send itself SIGSTOP there (it stays alive, holding its run lock,
until someone sends SIGCONT). Unset (always, outside tests), :func:`crash_point` is one dict lookup.

Named points (``<n>`` is a number):

=============================  ===========================================================================
``teacher:step:<n>``           teacher training, right after optimiser step n (global count, from 1)
``teacher:epoch:<n>``          teacher training, right after the checkpoint of epoch n is on disk
``stage:<name>:computed``      a cached stage (teacher, soft_labels, train_base, train_lever, ...) wrote
                               its artefacts but has not recorded them in manifest.json yet
``write:<dir>/<file>``         a run artefact (e.g. ``soft/targets.npz``, ``lever/scores.npz``) is fully
                               written to its temp file, not yet renamed into place
=============================  ===========================================================================
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "LEVER_TEST_CRASH_AT"
STOP_ENV = "LEVER_TEST_STOP_AT"


def crash_point(*name: object) -> None:
    """Kill (SIGKILL) or freeze (SIGSTOP) this process if ``":".join(name)`` is the point the test named."""
    crash, stop = os.environ.get(CRASH_ENV), os.environ.get(STOP_ENV)
    if not (crash or stop):
        return
    point = ":".join(str(n) for n in name)
    if point == crash:
        os.kill(os.getpid(), signal.SIGKILL)
    if point == stop:
        os.kill(os.getpid(), signal.SIGSTOP)
