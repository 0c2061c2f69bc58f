"""Errors a user can cause: one line (what, where, how to fix), exit code 2."""

from __future__ import annotations

import errno
import os

BUG_EXIT_CODE = 3  # an exception lever did not expect: a bug, reported apart from user errors (exit 2)


class LeverError(Exception):
    """A problem with the user's input or environment, reported as one line with exit code 2.

    ``where`` is a file (optionally ``file:line``) or an option; ``fix`` says what to do about it.
    """

    exit_code = 2

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        msg = f"{self.where}: {self.what}" if self.where else self.what
        if self.fix:
            msg += f" ({self.fix})"
        return " ".join(msg.split("\n"))


class DataError(LeverError):
    """Malformed or inconsistent data file."""


class ConfigError(LeverError):
    """Bad configuration: unknown key, wrong type, impossible value."""


class PluginError(LeverError):
    """Plugin loading or registration conflict."""


class PluginFailure(PluginError):
    """An exception raised inside a plugin, reported as one line naming the plugin and its distribution.
    A bug (in the plugin), not the user's input: exit code 3 like lever's own bugs."""

    exit_code = BUG_EXIT_CODE


class UpstreamError(LeverError):
    """Upstream checkout missing, drifted, or failing its contract."""


class LeverWarning(UserWarning):
    """Input that works but deserves a look (one line, printed as ``warning: ...`` by the CLI)."""


_OS_FIXES = {
    errno.EROFS: "the file system is read-only: choose a writable --out",
    errno.ENOSPC: "the disk is full: free some space or choose another --out; what was written is intact",
    errno.EDQUOT: "the disk quota is exhausted: free some space or choose another --out",
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
    errno.EEXIST: "a file is where lever needs a folder (or the reverse): move it or choose another --out",
    errno.ENOTDIR: "a file is where lever needs a folder: move it or choose another --out",
    errno.EISDIR: "a folder is where lever needs a file: move it or choose another path",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EMFILE: "raise the open-file limit (ulimit -n)",
}


def environment_error(exc: BaseException) -> LeverError | None:
    """The one-line user error for an OS error or exhausted memory (the user's environment), else None."""
    if isinstance(exc, MemoryError):
        return LeverError(
            "not enough memory", fix="use a machine with more memory, or fewer rows (data.max_train, max_test)"
        )
    if not isinstance(exc, OSError):
        return None
    what = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc)) or type(exc).__name__
    where = exc.filename
    if exc.filename2:
        where = f"{exc.filename} -> {exc.filename2}"
    return LeverError(what, where=str(where) if where is not None else None,
                      fix=_OS_FIXES.get(exc.errno or 0, "check the path and the disk"))  # fmt: skip
