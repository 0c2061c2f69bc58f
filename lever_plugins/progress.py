"""Progress for humans and for log files: a tqdm bar on a terminal, one line per ~10 % otherwise.

A tqdm bar written to a file or a pipe is a stream of carriage returns (tens of KB for a small run)
that no log viewer shows well; redirected output gets plain lines instead. Third-party bars
(transformers' "Loading weights", the hub's downloads) are switched off by :func:`quiet_third_party`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class LineProgress:
    """tqdm's ``update``/``set_postfix``/``close`` API, writing ``desc: 40% (n/total unit, 12s)`` lines
    each time another ``step`` fraction of ``total`` is done, and a last line on close."""

    def __init__(self, total: float | None, desc: str = "", unit: str = "it", step: float = 0.1,
                 file: TextIO | None = None, iterable: Iterable | None = None) -> None:  # fmt: skip
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.step = desc, unit, step
        self.file = file if file is not None else sys.stderr
        self.iterable = iterable
        self.n = 0
        self.postfix = ""
        self.t0 = time.perf_counter()
        self._next = step
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _line(self, final: bool = False) -> str:
        el = time.perf_counter() - self.t0
        n = f"{self.n:g}" if isinstance(self.n, float) else str(self.n)
        if final or not self.total:
            return f"{self.desc}: {n} {self.unit} in {el:.1f}s{self.postfix}"
        return f"{self.desc}: {100 * self.n / self.total:3.0f}% ({n}/{self.total} {self.unit}, {el:.1f}s){self.postfix}"

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.total and self.n / self.total >= self._next - 1e-12 and self.n < self.total:
            print(self._line(), file=self.file, flush=True)
            while self._next <= self.n / self.total + 1e-12:
                self._next += self.step

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = False, **kw: Any) -> None:
        """As tqdm's: a dict first (the trainers pass one: "texts/s" is no keyword), then keywords."""
        kw = {**(ordered_dict or {}), **kw}
        self.postfix = (", " + ", ".join(f"{k} {v}" for k, v in kw.items())) if kw else ""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            print(self._line(final=True), file=self.file, flush=True)


class _Silent:
    def __init__(self, iterable: Iterable | None = None) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable or ())

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def update(self, n: float = 1) -> None:
        pass

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = False, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress(iterable: Iterable | None = None, *, total: float | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, file: TextIO | None = None, **tqdm_kw: Any) -> Any:  # fmt: skip
    """A progress reporter: nothing when ``enabled`` is false, a tqdm bar when ``file`` (stderr) is a
    terminal, otherwise :class:`LineProgress` (one line per 10 %)."""
    if not enabled:
        return _Silent(iterable)
    stream = file if file is not None else sys.stderr
    if _is_tty(stream):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, **tqdm_kw)
    return LineProgress(total, desc, unit, file=stream, iterable=iterable)


def quiet_third_party() -> None:
    """Switch off transformers' and huggingface_hub's own progress bars ("Loading weights" once per model
    load): LEVER reports its own stages."""
    try:
        from transformers.utils import logging as tf_logging

        tf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
