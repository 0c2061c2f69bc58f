"""What an A/B run writes for people: compare.md/.csv/.tex, the decile plots, the manifest's provenance.

The tables follow ``[eval] k``: P@k and PSP@k for each k, coverage and macro-F1 at the largest k
(:func:`table_metrics`). Their header says what was compared on what: the data slice, the seed and
the settings that differ between the arms. With several seeds (``lever ab --seeds``) the same tables
hold mean ± sd over the seeds next to the first seed's paired-bootstrap intervals.
"""

from __future__ import annotations

import contextlib
import csv
import io
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.runs import Run, atomic_write, write_json
from lever_plugins.soft_labels.calibrate import resolved


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for d in ("lever-plugins", "torch", "transformers", "faiss-cpu", "numpy", "scipy", "napkinxc"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[d] = md.version(d)
    return out


def table_metrics(ks: Sequence[int]) -> tuple[str, ...]:
    """The rows of the A/B tables for ``[eval] k``: P@k and PSP@k for each k, C and macroF1 at the largest."""
    ks = sorted({int(k) for k in ks})
    top = ks[-1]
    return (*(f"P@{k}" for k in ks), *(f"PSP@{k}" for k in ks), f"C@{top}", f"macroF1@{top}")


def decile_k(ks: Sequence[int]) -> int:
    """k of the decile plots: 5 (the paper's figure) when evaluated, else the largest k."""
    return 5 if 5 in ks else max(ks)


def reference_table(metrics: dict[str, dict[str, float]], keys: tuple[str, ...]) -> str:
    rows = ["| run | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for name, m in metrics.items():
        rows.append(f"| {name} | " + " | ".join(f"{100 * m[k]:.2f}" for k in keys) + " |")
    return "\n".join(rows)


# ---------------------------------------------------------------- header


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _truth_weight(s: Any) -> str:
    w = float(getattr(s, "dense_truth_weight", 1.0))
    return "" if w == 1 else f", weight {_num(w)}"


def header_lines(cfg: Any, name: str, n_train: int, n_test: int, n_labels: int, check: dict[str, Any] | None,
                 seeds: Sequence[int] | None = None, chosen: dict[str, Any] | None = None) -> list[str]:
    """What a reader of the table needs: the data slice, the seed(s), the settings that differ between arms.
    ``chosen``: the hold-out choice of ``calibration = "auto"`` (stages.calibration_choice), if made."""
    d = cfg.data
    train = f"{n_train} train documents"
    if d.max_train:
        train += f" (a seeded random slice: data.max_train = {d.max_train})"
    if d.holdout:
        test = f"{n_test} held-out train documents as test (data.holdout = {_num(d.holdout)}; the test split unused)"
    else:
        test = f"{n_test} test documents"
    if d.max_test:
        test += f" (a seeded random slice: data.max_test = {d.max_test})"
    if seeds and len(seeds) > 1:
        seed = f"Seeds: {', '.join(map(str, seeds))} (mean ± sd over seeds; bootstrap intervals of seed {seeds[0]})"
    else:
        seed = f"Seed: {cfg.seed}"
    if cfg.teacher.seed:
        seed += f", teacher seed {cfg.teacher.seed}"
    t, s = cfg.teacher, cfg.soft_labels
    r = resolved(s, n_labels, chosen)
    calib = r.calibration
    if calib == "sigmoid":
        calib = f"sigmoid (a = {_num(r.sigmoid_a)}, c = {_num(r.sigmoid_c)})"
    if s.calibration == "auto" and chosen:
        vals = " vs ".join(f"{m} {100 * v:.2f}" for m, v in chosen["holdout_select"].items())
        calib = (f"auto: {calib}, chosen on a {chosen['holdout']:.0%} train hold-out"
                 + (f" of seed {seeds[0]}" if seeds and len(seeds) > 1 else "")
                 + f" by soft_labels.calibration_select ({vals})")
    elif s.calibration == "auto":
        calib = f"auto: {calib}"
    teacher = f"teacher {t.name} ({t.model}, " + (f"trained {t.epochs} epochs, {t.loss} loss)" if t.train
                                                    else "pre-trained, not trained)")
    soft = (f"soft labels {s.provider}: tau_l = {s.tau_l}, tau_d = {s.tau_d}, threshold = {_num(s.threshold)}, "
            f"{calib} calibration, blend_lambda = {_num(s.blend_lambda)} ({s.blend_mode})"
            + (", label rows" if s.label_rows else ", no label rows")
            + (f", dense targets (ground truth: {s.dense_truth}{_truth_weight(s)})"
               if getattr(s, "mode", "sparse") == "dense" else ""))
    lines = [
        f"Data: {name}; {train}; {test}; {n_labels} labels.",
        f"{seed}. Trainer: {cfg.trainer.adapter} (same settings in both arms).",
        f"The arms differ in: +LEVER adds {teacher}, {soft}.",
    ]
    if check is not None and check.get("differences"):
        lines.append("WARNING, also different: " + "; ".join(check["differences"]) + ".")
    return lines


# ---------------------------------------------------------------- tables


@dataclass
class Table:
    """The A/B table in one structure, rendered as Markdown, CSV and LaTeX (values are fractions)."""

    title: str
    header: list[str]  # sentences above the table
    boot: dict[str, dict[str, Any]]  # paired_bootstrap of (the first seed's) base vs +LEVER
    extra: dict[str, dict[str, float]] = field(default_factory=dict)  # reference rows: name -> metrics
    seeds: dict[str, dict[str, dict[str, float]]] | None = None  # aggregate(): arm -> metric -> mean/sd/n
    footer: str = ""
    extra_note: str = ""  # what the reference rows are

    @property
    def metrics(self) -> list[str]:
        return list(self.boot)

    @property
    def confidence(self) -> float:
        return float(next(iter(self.boot.values()), {}).get("confidence", 0.95))

    # -- Markdown: base vs +LEVER; reference rows (if any) in a second table, one row per run
    def markdown_table(self) -> str:
        conf = f"{100 * self.confidence:g}%"
        if self.seeds is None:
            lines = [f"| metric | base | +LEVER | Δ [{conf} CI] |", "|---|---:|---:|---|"]
            for m, r in self.boot.items():
                lines.append(f"| {m} | {100 * r['a']:.2f} | {100 * r['b']:.2f} | {_ci(r)} |")
            return "\n".join(lines) + "\n"
        n = next(iter(self.seeds["lever"].values()))["n"]
        lines = [f"| metric | base | +LEVER | Δ | Δ [{conf} CI], one seed |", "|---|---:|---:|---:|---|"]
        for m, r in self.boot.items():
            cells = [m, *(_pm(self.seeds[a][m], a == "delta") for a in ("base", "lever", "delta")), _ci(r)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + f"\n\nbase, +LEVER and Δ: mean ± sd (n - 1) over {n} seeds, in %.\n"

    def reference_markdown(self) -> str:
        """The reference rows (napkinXC PLT, tail baselines) beside base and +LEVER, one row per run; "" if none."""
        if not self.extra:
            return ""
        rows = {"base": {m: r["a"] for m, r in self.boot.items()},
                "+LEVER": {m: r["b"] for m, r in self.boot.items()}, **self.extra}
        return f"{self.extra_note or 'Reference, same split'}:\n\n" + reference_table(rows, tuple(self.boot)) + "\n"

    def markdown(self) -> str:
        text = f"# {self.title}\n\n" + "\n".join(self.header) + "\n\n" + self.markdown_table()
        if self.extra:
            text += "\n" + self.reference_markdown()
        return text + (f"\n{self.footer}\n" if self.footer else "")

    # -- CSV: one row per metric, fractions as in metrics.json (full precision)
    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        cols = ["metric", "base", "lever", "delta", "ci_lo", "ci_hi", "confidence", "n_boot"]
        if self.seeds is not None:
            cols += [f"{a}_{s}" for a in ("base", "lever", "delta") for s in ("mean", "sd")] + ["n_seeds"]
        w.writerow(cols + list(self.extra))
        for m, r in self.boot.items():
            row = [m, repr(r["a"]), repr(r["b"]), repr(r["delta"]), repr(r["lo"]), repr(r["hi"]),
                   repr(r["confidence"]), r["n_boot"]]
            if self.seeds is not None:
                row += [repr(self.seeds[a][m][s]) for a in ("base", "lever", "delta") for s in ("mean", "sd")]
                row.append(self.seeds["lever"][m]["n"])
            w.writerow(row + [repr(e[m]) for e in self.extra.values()])
        return buf.getvalue()

    # -- LaTeX (booktabs)
    def latex(self) -> str:
        conf = f"{100 * self.confidence:g}"
        extra = [tex_escape(e) for e in self.extra]
        if self.seeds is None:
            head = ["Metric", "base", "+LEVER", rf"$\Delta$ [{conf}\% CI]", *extra]
            align = "lrrl" + "r" * len(extra)
        else:
            head = ["Metric", "base", "+LEVER", r"$\Delta$", rf"$\Delta$ [{conf}\% CI]", *extra]
            align = "lrrrl" + "r" * len(extra)
        rows = []
        for m, r in self.boot.items():
            cells = [tex_escape(m)]
            if self.seeds is None:
                cells += [f"{100 * r['a']:.2f}", f"{100 * r['b']:.2f}"]
            else:
                cells += [_tex_pm(self.seeds[a][m], a == "delta") for a in ("base", "lever", "delta")]
            cells.append(f"${100 * r['delta']:+.2f}$ [${100 * r['lo']:+.2f}$, ${100 * r['hi']:+.2f}$]")
            cells += [f"{100 * e[m]:.2f}" for e in self.extra.values()]
            rows.append(" & ".join(cells) + r" \\")
        caption = tex_escape(self.title + ". " + " ".join(self.header[:2]) + " Values in %.")
        return "\n".join([
            "% " + "\n% ".join(tex_escape(h) for h in self.header),
            r"% needs \usepackage{booktabs}",
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{caption}}}",
            rf"\begin{{tabular}}{{{align}}}",
            r"\toprule",
            " & ".join(head) + r" \\",
            r"\midrule",
            *rows,
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
        ]) + "\n"


def _ci(r: dict[str, Any]) -> str:
    return f"{100 * r['delta']:+.2f} [{100 * r['lo']:+.2f}, {100 * r['hi']:+.2f}]"


def _pm(s: dict[str, float], signed: bool = False) -> str:
    return f"{100 * s['mean']:{'+' if signed else ''}.2f} ± {100 * s['sd']:.2f}"


def _tex_pm(s: dict[str, float], signed: bool = False) -> str:
    return rf"${100 * s['mean']:{'+' if signed else ''}.2f} \pm {100 * s['sd']:.2f}$"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"\ensuremath{\pm}",
        "Δ": r"\ensuremath{\Delta}", "τ": r"\ensuremath{\tau}", "λ": r"\ensuremath{\lambda}", "−": "-"}


def tex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (names, captions, comments)."""
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def aggregate(per_seed: dict[int, dict[str, dict[str, float]]], metrics: Sequence[str]) -> dict[str, Any]:
    """Mean and sample sd (ddof = 1; 0 for one seed) over seeds of each arm's metrics and of the delta:
    ``{"base"|"lever"|"delta": {metric: {"mean", "sd", "n"}}}``."""
    out: dict[str, Any] = {"base": {}, "lever": {}, "delta": {}}
    for m in metrics:
        vals = {a: np.array([per_seed[s][a][m] for s in per_seed], dtype=np.float64) for a in ("base", "lever")}
        vals["delta"] = vals["lever"] - vals["base"]
        for a, v in vals.items():
            out[a][m] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}
    return out


def write_tables(folder: Path, table: Table) -> list[Path]:
    """compare.md, compare.csv and compare.tex, each written atomically."""
    out = []
    for suffix, text in (("md", table.markdown()), ("csv", table.csv()), ("tex", table.latex())):
        path = Path(folder) / f"compare.{suffix}"
        with atomic_write(path, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        out.append(path)
    return out


def bootstrap_line(n_boot: int, confidence: float) -> str:
    return f"Paired bootstrap: {n_boot} resamples of the test documents, {confidence:.0%} intervals; values in %."


# ---------------------------------------------------------------- plots

PLOT_FORMATS = ("png", "pdf", "svg")


def write_deciles(
    run: Run,
    data_name: str,
    runs: dict[str, sp.csr_matrix],
    truth: sp.csr_matrix,
    train_truth: sp.csr_matrix,
    filter_pairs: Any,
    k: int = 5,
) -> None:
    """P@k contributions by train-frequency bin for each run, as JSON and plots (PNG, PDF, SVG).

    Equal positive-mass bins show the tail (as the paper's figure); equal label-count bins are kept too."""
    from lever_plugins.metrics import decile_contributions, plot_deciles

    for mode, suffix, what in (("mass", "", "equal positive mass per bin"),
                               ("labels", "_labels", "equal label count per bin")):
        deciles = {
            name: decile_contributions(s, truth, train_truth, k=k, mode=mode, filter_pairs=filter_pairs)
            for name, s in runs.items()
        }
        write_json(run.root / f"deciles{suffix}.json", deciles)
        plot_deciles(deciles, run.root / f"deciles{suffix}.png",
                     title=f"P@{k} by train-frequency bin ({what}): {data_name}", formats=PLOT_FORMATS)
