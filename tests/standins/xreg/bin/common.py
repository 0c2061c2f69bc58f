"""Shared by the stand-in binaries: XC sparse text in and out, option pairs, XReg's crash on bad input."""

import os
import signal
import sys

import numpy as np


def crash(why: str) -> None:
    print(why, flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)


def options(words: list[str]) -> dict[str, str]:
    if len(words) % 2:
        crash("odd number of option words: reads past argv")
    return dict(zip(words[::2], words[1::2], strict=True))


def read_matrix(path: str) -> np.ndarray:
    with open(path) as fh:
        rows, cols = map(int, fh.readline().split())
        m = np.zeros((rows, cols))
        for i, line in enumerate(fh):
            for tok in line.split():
                j, v = tok.split(":")
                m[i, int(j)] = float(v)
    return m


def unit_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n == 0, 1, n)


def model_folder(path: str) -> None:
    if not os.path.isdir(path):
        print(f"error: invalid folder name: {path}\nexiting...", file=sys.stderr)
        sys.exit(1)
