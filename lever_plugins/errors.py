"""Errors a user can cause: one line (what, where, how to fix), exit code 2."""

from __future__ import annotations


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


class UpstreamError(LeverError):
    """Upstream checkout missing, drifted, or failing its contract."""


class LeverWarning(UserWarning):
    """Input that works but deserves a look (one line, printed as ``warning: ...`` by the CLI)."""
