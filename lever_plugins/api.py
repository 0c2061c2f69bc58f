"""The Python API: :func:`ab`, :func:`sweep` and :func:`evaluate`; ``lever ab``, ``lever sweep`` and
``lever eval`` are thin layers over them.

```python
import lever_plugins as lever

res = lever.ab(data="data/debtags-bookworm", out="runs/ab", config="configs/debtags.toml",
               overrides={"soft_labels.tau_d": 10, "data.max_train": 2000})
print(res.table)                      # the Markdown table of compare.md
print(res.metrics["lever"]["PSP@5"])  # fractions, as in metrics.json
```

``config`` is a TOML path, a :class:`~lever_plugins.config.RunConfig` or None (the defaults);
``overrides`` maps ``"section.key"`` (or nested dicts) to values, checked as the TOML's are.
Every user error is a :class:`~lever_plugins.errors.LeverError` with one line (``exc.line()``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lever_plugins import config as cfgmod
from lever_plugins.config import RunConfig
from lever_plugins.errors import ConfigError

Log = Callable[[str], Any]

__all__ = ["ABResult", "EvalResult", "SweepResult", "ab", "evaluate", "load_config", "sweep"]


# ---------------------------------------------------------------- config


def _nested(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    if not overrides:
        return {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"overrides must be a dict, got {type(overrides).__name__}", where="overrides",
                          fix='e.g. {"soft_labels.tau_d": 10}')  # fmt: skip
    return cfgmod.nest(cfgmod.flatten(dict(overrides)))


def load_config(config: str | Path | RunConfig | None = None, overrides: Mapping[str, Any] | None = None,
                data: str | Path | None = None) -> RunConfig:
    """The run config: ``config`` (TOML path, RunConfig or None) with ``overrides`` and ``data`` applied."""
    nested = _nested(overrides)
    if data is not None:
        nested = cfgmod.merge(nested, {"data": {"path": str(data)}})
    if isinstance(config, RunConfig):
        base = {k: v for k, v in cfgmod.flatten(cfgmod.to_dict(config)).items() if v is not None}
        return cfgmod.from_dict(cfgmod.merge(cfgmod.nest(base), nested))
    return cfgmod.load(config, nested)


def parse_seeds(seeds: str | Iterable[int] | None) -> list[int]:
    """``"13,14,15"`` or ``[13, 14, 15]`` -> ``[13, 14, 15]``; duplicates and non-integers are errors."""
    if seeds is None:
        return []
    items = [s.strip() for s in seeds.split(",")] if isinstance(seeds, str) else list(seeds)
    try:
        out = [int(s) for s in items if not isinstance(s, bool) and str(s).strip() and float(s) == int(s)]
    except (TypeError, ValueError):
        out = []
    if not out or len(out) != len(items) or len(set(out)) != len(out) or min(out) < 0:
        raise ConfigError(f"--seeds {seeds!r} is not a list of distinct non-negative integers", where="--seeds",
                          fix="e.g. --seeds 13,14,15")  # fmt: skip
    return out


# ---------------------------------------------------------------- ab


@dataclass
class ABResult:
    """What :func:`ab` returns. ``metrics``: arm ("base", "lever", reference and baseline names) -> metric ->
    fraction, as in ``<arm>/metrics.json`` (with several seeds: the mean over seeds of base and lever);
    ``table``: the Markdown table of compare.md; ``bootstrap``: the paired bootstrap (first seed)."""

    out: Path
    metrics: dict[str, dict[str, float]]
    table: str
    bootstrap: dict[str, dict[str, Any]]
    files: list[Path]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    per_seed: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    aggregate: dict[str, Any] | None = None  # seeds: {"base"|"lever"|"delta": {metric: {mean, sd, n}}}


def ab(data: str | Path | None = None, out: str | Path = "runs/ab", config: str | Path | RunConfig | None = None,
       overrides: Mapping[str, Any] | None = None, seeds: str | Iterable[int] | None = None,
       log: Log | None = print) -> ABResult:
    """Base vs +LEVER (``lever ab``): metrics, compare.md/.csv/.tex, decile plots, manifest in ``out``.

    ``seeds`` (e.g. ``[13, 14, 15]``): one run per seed in ``out/seed-<s>`` (each cached as any run) and
    the tables in ``out`` with mean ± sd over the seeds next to the first seed's bootstrap intervals;
    per-seed metrics in ``out/seeds.json`` and ``out/seeds.csv``."""
    from lever_plugins.runner import run_ab

    log = log or (lambda s: None)
    cfg = load_config(config, overrides, data)
    seed_list = parse_seeds(seeds)
    out = Path(out)
    if len(seed_list) <= 1:
        if seed_list:
            cfg = dataclasses.replace(cfg, seed=seed_list[0])
        r = run_ab(cfg, out, log=log)
        files = [out / f"compare.{s}" for s in ("md", "csv", "tex")]
        files += [out / f"deciles{m}.{f}" for m in ("", "_labels") for f in ("png", "pdf", "svg")]
        return ABResult(out, r["metrics"], r["table"], r["bootstrap"], files, r["stage_seconds"],
                        {cfg.seed: r["metrics"]})  # fmt: skip
    return _ab_seeds(cfg, out, seed_list, log)


def _ab_seeds(cfg: RunConfig, out: Path, seeds: list[int], log: Log) -> ABResult:
    from lever_plugins import report
    from lever_plugins.runner import run_ab
    from lever_plugins.runs import Run, atomic_write, stage_store, write_json
    from lever_plugins.stages import load_data, preflight

    load_data(dataclasses.replace(cfg, seed=seeds[0]))  # data, plugins and models: before any folder exists
    preflight(cfg)
    results: dict[int, dict[str, Any]] = {}
    t0 = time.perf_counter()
    with Run(out) as parent, stage_store(parent.root / ".lever" / "stages"):
        for s in seeds:
            log(f"== seed {s} ({len(results) + 1}/{len(seeds)}) -> {out / f'seed-{s}'}")
            results[s] = run_ab(dataclasses.replace(cfg, seed=s), out / f"seed-{s}", log=log)
        first = results[seeds[0]]
        names = list(first["bootstrap"])
        per_seed = {s: {a: dict(r["metrics"][a]) for a in ("base", "lever")} for s, r in results.items()}
        agg = report.aggregate(per_seed, names)
        data = Run(out / f"seed-{seeds[0]}").manifest()["data"]
        one = first["compare"]
        table = report.Table(
            title=one.title,
            header=[*report.header_lines(cfg, data["name"], data["n_trn"], data["n_tst"], data["L"],
                                         first["ab_check"], seeds=seeds, chosen=first.get("calibration")),
                    report.bootstrap_line(cfg.eval.bootstrap, cfg.eval.confidence)],
            boot=first["bootstrap"], extra=one.extra, seeds=agg, footer=one.footer,
            extra_note=(one.extra_note + f", seed {seeds[0]}") if one.extra else "",
        )  # fmt: skip
        files = report.write_tables(out, table)
        write_json(out / "seeds.json", {"seeds": seeds, "metrics": {str(s): m for s, m in per_seed.items()},
                                        "aggregate": agg})
        all_keys = list(per_seed[seeds[0]]["base"])
        with atomic_write(out / "seeds.csv", "w", encoding="utf-8", newline="") as fh:
            fh.write(",".join(["seed", "arm", *all_keys]) + "\n")
            for s, arms in per_seed.items():
                for arm, m in arms.items():
                    fh.write(",".join([str(s), arm, *(repr(m[k]) for k in all_keys)]) + "\n")
        files += [out / "seeds.json", out / "seeds.csv"]
    md = table.markdown_table() + ("\n" + table.reference_markdown() if table.extra else "")
    log(f"\n{len(seeds)} seeds ({time.perf_counter() - t0:.1f}s):\n\n" + md)
    mean = {a: {m: v["mean"] for m, v in agg[a].items()} for a in ("base", "lever")}
    return ABResult(out, mean, md, first["bootstrap"], files, first["stage_seconds"], per_seed, agg)


# ---------------------------------------------------------------- sweep

DEFAULT_HOLDOUT = 0.2


@dataclass
class SweepResult:
    """What :func:`sweep` returns: one row per grid point (the point's values, then the +LEVER arm's
    metrics and ``base:<metric>``), the sorted Markdown table, the winner and its config file."""

    out: Path
    rows: list[dict[str, Any]]
    table: str
    sort_by: str
    best: dict[str, Any] | None = None
    best_config: Path | None = None


def _grid(grid: Mapping[str, Sequence[Any]] | Iterable[str]) -> dict[str, list[Any]]:
    if isinstance(grid, Mapping):
        out = {}
        for k, v in grid.items():
            vals = [v] if isinstance(v, str | int | float | bool) else list(v)
            if not vals:
                raise ConfigError(f"grid key {k!r} has no values", where="--grid",
                                  fix="e.g. --grid trainer.l2=1e-6,1e-5")
            out[str(k)] = vals
    else:
        out = dict(cfgmod.parse_grid(item) for item in grid)
    if not out:
        raise ConfigError("no grid given", where="--grid", fix="e.g. --grid soft_labels.tau_d=5,10")
    return out


def metric_name(name: str, ks: Sequence[int]) -> str:
    """``"psp@5"`` -> ``"PSP@5"`` (a metric lever ab reports at one of ``[eval] k``), else a ConfigError."""
    from lever_plugins.metrics.ranking import FAMILIES

    fam, at, k = str(name).strip().partition("@")
    by_lower = {f.lower(): f for f in FAMILIES}
    if at and fam.lower() in by_lower and k.isdigit() and int(k) in ks:
        return f"{by_lower[fam.lower()]}@{int(k)}"
    raise ConfigError(f"unknown metric {name!r}", where="--select",
                      fix=f"one of {', '.join(FAMILIES)} at k in [eval] k = {list(ks)}, e.g. PSP@{max(ks)}")


def sweep(data: str | Path | None = None, out: str | Path = "runs/sweep",
          config: str | Path | RunConfig | None = None, grid: Mapping[str, Sequence[Any]] | Iterable[str] = (),
          overrides: Mapping[str, Any] | None = None, select: str | None = None, holdout: float | None = None,
          log: Log | None = print) -> SweepResult:
    """``lever sweep``: base vs +LEVER at every point of ``grid`` on a hold-out slice of train (``[data]
    holdout`` if set, else ``holdout`` = 0.2; the test split is never read), every stage cached and shared
    across the points (``out/points/<i>``). Writes ``sweep.csv`` and ``sweep.md`` (sorted by ``select``,
    else PSP at the largest k); ``select`` (e.g. ``"psp@5"``) also writes the winner as ``best.toml``: the
    config with the winning values, for ``lever ab --config best.toml`` on the test split."""
    from lever_plugins.runner import run_ab
    from lever_plugins.runs import Run, atomic_write, stage_store
    from lever_plugins.stages import load_data, preflight

    log = log or (lambda s: None)
    points_grid = _grid(grid)
    base_nested = _nested(overrides)
    if data is not None:
        base_nested = cfgmod.merge(base_nested, {"data": {"path": str(data)}})
    cfg0 = load_config(config, base_nested)
    if holdout is not None and not 0 < holdout < 1:
        raise ConfigError(f"holdout must be in (0, 1), got {holdout}", where="--holdout", fix="e.g. 0.2")
    split = {"data": {"holdout": cfg0.data.holdout or (holdout or DEFAULT_HOLDOUT)}}
    keys = list(points_grid)
    points = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*points_grid.values())]
    cfgs = []
    for p in points:  # every point's config is checked before anything runs
        c = load_config(config, cfgmod.merge(cfgmod.merge(base_nested, split), cfgmod.nest(p)))
        if c.data.holdout <= 0:
            raise ConfigError("a sweep runs on a hold-out of train, never the test split", where="--grid data.holdout",
                              fix="leave data.holdout out of the grid, or give values in (0, 1)")  # fmt: skip
        cfgs.append(c)
    sort_by = metric_name(select, cfg0.eval.k) if select else f"PSP@{max(cfg0.eval.k)}"
    for c in cfgs:
        if sort_by not in _names(c):
            raise ConfigError(f"--select {sort_by} is not reported at some grid point (eval.k {c.eval.k})",
                              where="--select", fix="choose a metric at a k every point evaluates")  # fmt: skip
    load_data(cfgs[0])  # the data and the hold-out split are fine before a folder exists
    preflight(cfgs[0])
    out = Path(out)
    rows: list[dict[str, Any]] = []
    with Run(out) as parent, stage_store(parent.root / ".lever" / "stages"):
        for i, (p, c) in enumerate(zip(points, cfgs, strict=True)):
            what = ", ".join(f"{k}={_show(v)}" for k, v in p.items())
            log(f"== point {i + 1}/{len(points)}: {what}")
            r = run_ab(c, out / "points" / f"{i:03d}", log=log)
            names = _names(c)
            row = {"point": i, **{k: _show(v) for k, v in p.items()}}
            row.update({m: r["metrics"]["lever"][m] for m in names})
            row.update({f"base:{m}": r["metrics"]["base"][m] for m in names})
            rows.append(row)
        cols = list(dict.fromkeys(k for row in rows for k in row))
        with atomic_write(out / "sweep.csv", "w", encoding="utf-8", newline="") as fh:
            import csv

            w = csv.writer(fh, lineterminator="\n")
            w.writerow(cols)
            for row in rows:
                w.writerow([repr(row[c]) if isinstance(row.get(c), float) else row.get(c, "") for c in cols])
        ranked = sorted(rows, key=lambda row: -row.get(sort_by, -math.inf))
        best = ranked[0] if select else None
        table = _sweep_table(ranked, keys, _names(cfg0), sort_by, cfg0, split["data"]["holdout"], best)
        with atomic_write(out / "sweep.md", "w", encoding="utf-8") as fh:
            fh.write(table)
        best_path = None
        if best is not None:
            best_path = out / "best.toml"
            _write_best(best_path, config, base_nested, points[best["point"]], sort_by, best[sort_by])
    log("\n" + table + (f"\nwinner ({sort_by}): point {best['point']} -> {best_path}" if best else ""))
    return SweepResult(out, rows, table, sort_by, best, best_path)


def _names(c: RunConfig) -> list[str]:
    from lever_plugins.report import table_metrics

    return list(table_metrics(c.eval.k))


def _show(v: Any) -> Any:
    return v if isinstance(v, str | int | float | bool) else json.dumps(v)


def _sweep_table(ranked: list[dict[str, Any]], keys: list[str], names: list[str], sort_by: str, cfg: RunConfig,
                 holdout: float, best: dict[str, Any] | None) -> str:
    head = [*keys, *names, f"Δ{sort_by}"]
    lines = [
        f"# lever sweep on {cfg.data.name or Path(cfg.data.path).name}",
        "",
        f"Hold-out: {holdout:g} of train as test (seed {cfg.seed}; the test split unused)"
        + (f", training on a slice of {cfg.data.max_train} of the rest (data.max_train)" if cfg.data.max_train else "")
        + f". +LEVER arm in %, "
        f"sorted by {sort_by}; Δ: +LEVER - base." + (f" Winner: point {best['point']} (best.toml)." if best else ""),
        "",
        "| point | " + " | ".join(head) + " |",
        "|---:|" + "---|" * len(keys) + "---:|" * (len(names) + 1),
    ]
    for row in ranked:
        cells = [str(row["point"]), *(str(row[k]) for k in keys)]
        cells += [f"{100 * row[m]:.2f}" for m in names]
        cells.append(f"{100 * (row[sort_by] - row[f'base:{sort_by}']):+.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_best(path: Path, config: Any, base_nested: dict[str, Any], point: dict[str, Any], metric: str,
                value: float) -> None:
    """The winning config as TOML: the given config's values, the overrides and the winning point; no
    hold-out (``lever ab --config best.toml`` evaluates on the test split). Checked by loading it back."""
    import tomllib

    from lever_plugins.runs import atomic_path

    if isinstance(config, RunConfig):
        values = {k: v for k, v in cfgmod.flatten(cfgmod.to_dict(config)).items() if v is not None}
        values = cfgmod.nest(values)
    elif config is not None:
        values = tomllib.loads(Path(config).read_text(encoding="utf-8"))
    else:
        values = {}
    values = cfgmod.merge(cfgmod.merge(values, base_nested), cfgmod.nest(point))
    values.get("data", {}).pop("holdout", None)
    what = ", ".join(f"{k} = {_show(v)}" for k, v in point.items())
    text = (f"# lever sweep winner by {metric} on the hold-out ({100 * value:.2f}): {what}\n"
            f"# run it on the test split: lever ab --config {path.name} --out DIR\n" + to_toml(values))
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        cfgmod.load(tmp)  # what we write is a config lever accepts


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string (\uXXXX escapes included) is a TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise ConfigError(f"cannot write {v!r} as TOML", where="best.toml")


def to_toml(values: dict[str, Any], prefix: str = "") -> str:
    """Nested dict -> TOML text (keys before tables; ``None`` values left out)."""
    lines = [f"{json.dumps(k) if not k.replace('_', '').isalnum() else k} = {_toml_value(v)}"
             for k, v in values.items() if v is not None and not isinstance(v, dict)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in values.items():
        if isinstance(v, dict):
            name = f"{prefix}{k}"
            inner = to_toml(v, f"{name}.")
            out += f"\n[{name}]\n{inner}" if inner.strip() else f"\n[{name}]\n"
    return out


# ---------------------------------------------------------------- evaluate


def _rows(rows: Any, n_truth: int) -> tuple[Any, Any]:
    """(test rows, train rows or None) from a rows.json path, a dict as rows.json holds, or an index list."""
    import numpy as np

    from lever_plugins.errors import DataError

    if rows is None:
        return None, None
    where = str(rows) if isinstance(rows, str | Path) else "rows"
    trn = None
    try:
        if isinstance(rows, str | Path):
            rows = json.loads(Path(rows).read_text(encoding="utf-8"))
        if isinstance(rows, dict):
            trn = np.asarray(rows["train"]["rows"], dtype=np.int64) if "train" in rows else None
            rows = rows["test"]["rows"]
        tst = np.asarray(rows, dtype=np.int64).reshape(-1)
    except FileNotFoundError:
        raise DataError("rows file not found", where=where, fix="pass the rows.json of a sliced run") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"not a rows.json of a run or a list of row indices ({type(exc).__name__})", where=where,
                        fix="pass OUT/rows.json, which lever writes for runs with max_train, max_test or a hold-out",
                        ) from None  # fmt: skip
    if len(tst) == 0 or tst.min() < 0 or tst.max() >= n_truth:
        raise DataError(f"row indices must be in [0, {n_truth}) (the truth's rows)", where=where,
                        fix="pass the label file of the split the run's test rows came from (rows.json: test.split)")
    return tst, trn


@dataclass
class EvalResult:
    """What :func:`evaluate` returns: metric -> fraction, and a Markdown table of them in %."""

    metrics: dict[str, float]
    table: str


def evaluate(scores: Any, truth: Any, train: Any = None, filter: Any = None, k: Iterable[int] = (1, 3, 5),
             name: str = "", A: float | None = None, B: float | None = None,
             out: str | Path | None = None, rows: Any = None) -> EvalResult:
    """``lever eval``: P, nDCG, PSP, PSnDCG, R, C, macro P/R/F1 at each k of a score matrix.

    ``scores``, ``truth``, ``train``: sparse matrices or paths (.npz or XC text); ``filter``: an (n, 2)
    array of (row, label) pairs or a filter file (of ``truth``'s rows). PSP and PSnDCG need ``train``.
    ``rows``: the ``rows.json`` of a sliced run (``max_train``, ``max_test``, hold-out), or a sequence of
    row indices: the scores are of those rows of ``truth`` (and of the run's train rows of ``train``).
    ``out``: metrics JSON."""
    import numpy as np

    from lever_plugins.data import read_filter, read_matrix
    from lever_plugins.errors import DataError
    from lever_plugins.metrics import evaluate as _evaluate
    from lever_plugins.metrics import propensity_ab
    from lever_plugins.runs import write_json

    def mat(x: Any, nonneg: bool = True) -> Any:
        import scipy.sparse as sp

        return read_matrix(x, nonneg=nonneg) if isinstance(x, str | Path) else sp.csr_matrix(x)

    s = mat(scores, nonneg=False)  # logits and cosines may be negative
    t = mat(truth)
    tst_rows, trn_rows = _rows(rows, t.shape[0])
    all_t = t.shape[0]
    if tst_rows is not None:
        t = t[tst_rows].tocsr()
    where = str(scores) if isinstance(scores, str | Path) else "scores"
    if s.shape != t.shape:
        raise DataError(f"scores shape {s.shape} != truth shape {t.shape}", where=where,
                        fix="scores and truth need the same rows and label columns")  # fmt: skip
    tr = mat(train) if train is not None else None
    if tr is not None and tr.shape[1] != t.shape[1]:
        raise DataError(f"train has {tr.shape[1]} labels, truth {t.shape[1]}", where=str(train))
    if tr is not None and trn_rows is not None:
        if len(trn_rows) and trn_rows.max() >= tr.shape[0]:
            raise DataError(f"the run's train rows go up to {trn_rows.max()}, the train labels have {tr.shape[0]}",
                            where=str(rows), fix="pass the train labels of the run's data set")  # fmt: skip
        tr = tr[trn_rows].tocsr()
    if tr is None and (A is not None or B is not None):
        raise ConfigError("A/B set a propensity, which needs the train labels", where="evaluate(A=, B=)",
                          fix="pass train=")  # fmt: skip
    if filter is None:
        pairs = None
    elif isinstance(filter, str | Path):
        pairs = read_filter(filter, all_t, t.shape[1])
    else:
        pairs = np.asarray(filter, dtype=np.int64).reshape(-1, 2)
    if pairs is not None and tst_rows is not None:
        from lever_plugins.stages import _filter_rows

        pairs = _filter_rows(pairs, tst_rows)
    a, b = propensity_ab(name) if tr is not None else (None, None)
    m = _evaluate(s, t, train_truth=tr, k=tuple(k), A=a if A is None else A, B=b if B is None else B,
                  filter_pairs=pairs, name=name)  # fmt: skip
    if out is not None:
        write_json(out, m)
    table = "| metric | % |\n|---|---:|\n" + "".join(f"| {key} | {100 * v:.2f} |\n" for key, v in m.items())
    return EvalResult(m, table)
