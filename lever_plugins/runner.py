"""The A/B runner: base vs +LEVER on the same data, seed, features and trainer settings.

A thin layer over :mod:`lever_plugins.stages` (every stage cached in the run folder) that adds the tail
baselines, the paired bootstrap and the report (:mod:`lever_plugins.report`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import scipy.sparse as sp

from lever_plugins import config as cfgmod
from lever_plugins import plugins, report
from lever_plugins.baselines import BaselineContext
from lever_plugins.config import RunConfig
from lever_plugins.errors import ConfigError
from lever_plugins.report import versions, write_deciles
from lever_plugins.runs import Run, write_json
from lever_plugins.stages import (
    arm_inputs,
    arm_of,
    calibration_choice,
    data_signature,
    emit,
    eval_kwargs,
    features,
    load_data,
    make_baseline,
    preflight,
    save_rows,
    stage,
    train_stage,
)


def train_one(cfg: RunConfig, out: str | Path, lever: bool = True, log: Any = print) -> dict[str, float]:
    """One arm alone (``lever train [--no-lever]``): OUT/<arm>/scores.npz and metrics.json."""
    from lever_plugins.metrics import evaluate

    arm = "lever" if lever else "base"
    ds = load_data(cfg)
    adapter = preflight(cfg)
    sig = data_signature(ds)
    with Run(out) as run:
        save_rows(run, ds)
        with stage(run, "features", log):
            feats = features(ds, cfg, needed=adapter.needs_features)
        x, y, ukey = arm_inputs(run, ds, cfg, sig, feats, lever, log)
        s, _ = train_stage(run, arm_of(run, ds, cfg, arm, feats, x, y), cfg, ukey, log)
        m = evaluate(s, ds.y_tst, name=ds.name, **eval_kwargs(ds, cfg))
        write_json(run.root / arm / "metrics.json", m)
        return m


def run_ab(cfg: RunConfig, out: str | Path, log: Any = print) -> dict[str, Any]:
    """Base vs +LEVER with the same seed, features and trainer settings. Returns the comparison."""
    from lever_plugins.compare import paired_bootstrap
    from lever_plugins.compare.arms import arm_settings
    from lever_plugins.compare.arms import report as arms_report
    from lever_plugins.compare.arms import summary as arms_summary
    from lever_plugins.metrics import evaluate

    walls: dict[str, float] = {}
    t0 = time.perf_counter()
    ds = load_data(cfg)  # bad input fails here, before the run directory exists
    adapter = preflight(cfg)  # and so does a missing or drifted upstream
    sig = data_signature(ds)
    chosen_baselines = {b: make_baseline(cfg, b) for b in cfg.eval.baselines}  # unknown names fail here too
    if cfg.eval.reference == "plt":  # registered by lever-napkinxc as the baseline "plt"
        reg = plugins.baselines()
        if "plt" not in reg:
            raise ConfigError(
                "eval.reference = 'plt' needs the lever-napkinxc adapter (it registers the baseline 'plt')",
                where="--reference",
                fix="pip install adapters/napkinxc (scripts/setup.sh does)",
            )
        reference = make_baseline(cfg, "plt")
    for name in cfg.baselines:
        if name not in cfg.eval.baselines and not (name == "plt" and cfg.eval.reference == "plt"):
            raise ConfigError(
                f"options for baseline {name!r}, which this run does not use",
                where=f"[baselines.{name}]",
                fix=f"add {name!r} to [eval] baselines or remove the table",
            )
    walls["data"] = time.perf_counter() - t0
    with Run(out) as run:
        save_rows(run, ds)
        log(
            f"data {ds.name}: {len(ds.trn_texts)} train, {len(ds.tst_texts)} test, {ds.num_labels} labels"
            + (f" (hold-out {cfg.data.holdout:.0%} of train as test)" if cfg.data.holdout else "")
        )
        with stage(run, "features", log) as info:
            feats = features(ds, cfg, needed=adapter.needs_features)
        walls["features"] = info["seconds"]

        arms = {arm: arm_inputs(run, ds, cfg, sig, feats, arm == "lever", log) for arm in ("base", "lever")}
        scores: dict[str, sp.csr_matrix] = {}
        metrics: dict[str, dict[str, float]] = {}
        ek = eval_kwargs(ds, cfg)
        settings: dict[str, dict[str, Any]] = {}
        for arm, (x, y, ukey) in arms.items():
            one = arm_of(run, ds, cfg, arm, feats, x, y)
            texts = (one.trn_texts, one.tst_texts)
            s, stats = train_stage(run, one, cfg, ukey, log)
            settings[arm] = arm_settings(
                adapter=cfg.trainer.adapter, trainer=cfg.trainer, encoder=cfg.encoder, seed=cfg.seed,
                data_signature=sig, truth=ek["train_truth"], x_train=x, targets=y, x_test=feats["tst"], texts=texts,
            )  # fmt: skip
            scores[arm] = s
            metrics[arm] = evaluate(s, ds.y_tst, name=ds.name, **ek)
            write_json(run.root / arm / "metrics.json", metrics[arm])
            emit(run, "metrics", arm=arm, metrics=metrics[arm])

        t1, n_before = time.perf_counter(), len(run.timings)
        boot = paired_bootstrap(
            scores["base"],
            scores["lever"],
            ds.y_tst,
            ek["train_truth"],
            metrics=report.table_metrics(cfg.eval.k),
            n_boot=cfg.eval.bootstrap,
            confidence=cfg.eval.confidence,
            seed=cfg.seed,
            filter_pairs=ek["filter_pairs"],
            A=ek["A"],
            B=ek["B"],
        )
        calibration = calibration_choice(run, ds, cfg)
        check = arms_report(settings["base"], settings["lever"], {"teacher": cfgmod.to_dict(cfg.teacher),
                                                                  "soft_labels": cfgmod.to_dict(cfg.soft_labels)})
        log(arms_summary(check))
        rows: dict[str, dict[str, float]] = {}  # reference rows: title -> metrics
        if cfg.eval.reference == "plt":
            bl, r = reference
            ctx = BaselineContext(run, ds, cfg, sig, feats, arms, scores, log, [plugins.fingerprint(r.plugin)])
            with plugins.guard(r, "run"):
                ref = bl.run(ctx)
            metrics["plt"] = evaluate(ref, ds.y_tst, name=ds.name, **ek)
            write_json(run.root / "reference" / "metrics.json", metrics["plt"])
            rows["napkinXC PLT"] = metrics["plt"]
        extra = {}  # tail baselines: display name -> arm name in scores/metrics
        for name, (bl, r) in chosen_baselines.items():
            ctx = BaselineContext(run, ds, cfg, sig, feats, arms, scores, log, [plugins.fingerprint(r.plugin)])
            with plugins.guard(r, "run"):
                scores[name] = bl.run(ctx)
            metrics[name] = evaluate(scores[name], ds.y_tst, name=ds.name, **ek)
            write_json(run.root / "baselines" / name / "metrics.json", metrics[name])
            emit(run, "metrics", arm=name, metrics=metrics[name])
            rows[bl.title] = metrics[name]
            extra[bl.title] = name
        what = ["napkinXC PLT on TF-IDF, binary targets"] if "plt" in metrics else []
        what += ["tail baselines on the same features"] if extra else []
        compare = report.Table(
            title=f"base vs +LEVER on {ds.name}",
            header=[*report.header_lines(cfg, ds.name, ds.y_trn.shape[0], len(ds.tst_texts), ds.num_labels, check,
                                         chosen=calibration),
                    report.bootstrap_line(cfg.eval.bootstrap, cfg.eval.confidence)],
            boot=boot, extra=rows, footer=arms_summary(check),
            extra_note=f"Reference, same split ({'; '.join(what)})",
        )  # fmt: skip
        report.write_tables(run.root, compare)
        table = compare.markdown_table() + ("\n" + compare.reference_markdown() if rows else "")
        runs = {"base": scores["base"], "+LEVER": scores["lever"], **{t: scores[a] for t, a in extra.items()}}
        write_deciles(run, ds.name, runs, ds.y_tst, ek["train_truth"], ek["filter_pairs"],
                      k=report.decile_k(cfg.eval.k))
        # the baselines' own stages (hold-out classifiers, label rows) are timed and listed by name: compare's
        # figure is the rest (bootstrap, tables, plots), so no second counts twice
        walls["compare"] = time.perf_counter() - t1 - sum(t["seconds"] for t in run.timings[n_before:])
        man = run.manifest()
        stage_secs = {k: v.get("seconds") for k, v in man.get("stages", {}).items()}
        run.update_manifest(
            config=cfgmod.to_dict(cfg),
            seeds={"run": cfg.seed, "teacher": cfg.teacher.seed or cfg.seed},
            versions=versions(),
            plugins=plugins.plugin_versions(),
            wall_seconds={**walls, **stage_secs},
            ab_check=check,
            data={
                "name": ds.name,
                "signature": sig,
                "n_trn": ds.y_trn.shape[0],
                "n_tst": len(ds.tst_texts),
                "L": ds.num_labels,
            },
        )
        timings = [("data", walls["data"], False)]
        timings += [(t["stage"], t["seconds"], bool(t.get("cached"))) for t in run.timings]
        timings.append(("compare", walls["compare"], False))
        log("\n" + table)
        log("time per stage: " + ", ".join(f"{n} {sec:.1f}s" + (" (cached)" if c else "") for n, sec, c in timings)
            + f"; total {time.perf_counter() - t0:.1f}s")
        return {"metrics": metrics, "bootstrap": boot, "table": table, "compare": compare,
                "stage_seconds": {n: sec for n, sec, _ in timings}, "ab_check": check, "calibration": calibration}
