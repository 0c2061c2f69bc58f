"""What an A/B run writes for people: compare.md, the decile plots, and the manifest's provenance."""

from __future__ import annotations

import contextlib
import platform
import sys
from typing import Any

import scipy.sparse as sp

from lever_plugins.runs import Run, atomic_write, write_json


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for d in ("lever-plugins", "torch", "transformers", "faiss-cpu", "numpy", "scipy", "napkinxc"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[d] = md.version(d)
    return out


def reference_table(metrics: dict[str, dict[str, float]], keys: tuple[str, ...]) -> str:
    rows = ["| run | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for name, m in metrics.items():
        rows.append(f"| {name} | " + " | ".join(f"{100 * m[k]:.2f}" for k in keys) + " |")
    return "\n".join(rows)


def write_compare(run: Run, title: str, n_test: int, n_labels: int, n_boot: int, confidence: float, body: str) -> None:
    """``compare.md``: the header (what was compared, on what) and the tables."""
    header = (
        f"# base vs +LEVER on {title}\n\n{n_test} test documents, {n_labels} labels; "
        f"paired bootstrap ({n_boot} resamples of test documents), "
        f"{confidence:.0%} intervals; values in %.\n\n"
    )
    with atomic_write(run.root / "compare.md", "w", encoding="utf-8") as fh:
        fh.write(header + body + "\n")


def write_deciles(
    run: Run,
    data_name: str,
    runs: dict[str, sp.csr_matrix],
    truth: sp.csr_matrix,
    train_truth: sp.csr_matrix,
    filter_pairs: Any,
) -> None:
    """P@5 contributions by train-frequency bin for each run, as JSON and plots.

    Equal positive-mass bins show the tail (as the paper's figure); equal label-count bins are kept too."""
    from lever_plugins.metrics import decile_contributions, plot_deciles

    for mode, suffix in (("mass", ""), ("labels", "_labels")):
        deciles = {
            name: decile_contributions(s, truth, train_truth, k=5, mode=mode, filter_pairs=filter_pairs)
            for name, s in runs.items()
        }
        write_json(run.root / f"deciles{suffix}.json", deciles)
        plot_deciles(deciles, run.root / f"deciles{suffix}.png", title=f"P@5 by train-frequency bin: {data_name}")
