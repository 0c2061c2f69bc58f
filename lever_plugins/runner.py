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
from lever_plugins import plugins
from lever_plugins.baselines import BaselineContext
from lever_plugins.config import RunConfig
from lever_plugins.data.dataset import Dataset
from lever_plugins.errors import ConfigError
from lever_plugins.report import reference_table, versions, write_compare, write_deciles
from lever_plugins.runs import Run, write_json
from lever_plugins.stages import (
    _save_csr,
    arm_context,
    arm_inputs,
    arm_sparse,
    arm_texts,
    cached_stage,
    data_signature,
    emit,
    eval_kwargs,
    features,
    load_data,
    preflight,
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
        with stage(run, "features", log):
            feats = features(ds, cfg, needed=getattr(adapter, "needs_features", True))
        x, y, ukey = arm_inputs(run, ds, cfg, sig, feats, lever, log)
        s, _ = train_stage(
            run, arm, x, y, feats["tst"], cfg, ukey, log,
            texts=arm_texts(ds, y.shape[0]), context=arm_context(run, ds, arm, y.shape[0]),
            x_sparse=arm_sparse(feats, y.shape[0]),
        )  # fmt: skip
        m = evaluate(s, ds.y_tst, name=ds.name, **eval_kwargs(ds, cfg))
        write_json(run.root / arm / "metrics.json", m)
        return m


def reference_stage(run: Run, ds: Dataset, cfg: RunConfig, sig: str, log: Any = None) -> sp.csr_matrix:
    """napkinXC PLT on TF-IDF, trained on the original binary targets: a standard XC library beside the A/B."""
    try:
        from lever_napkinxc.reference import plt_reference
    except ImportError as exc:
        raise ConfigError(
            "eval.reference = 'plt' needs the lever-napkinxc adapter",
            where="--reference",
            fix="pip install -e adapters/napkinxc (scripts/setup.sh does)",
        ) from exc
    key = cfgmod.config_hash(sig, cfg.seed, cfg.trainer.top_k, "plt")
    art = "reference/scores.npz"

    def compute() -> None:
        s = plt_reference(ds.trn_texts, ds.binary_train(), ds.tst_texts, top_k=cfg.trainer.top_k, seed=cfg.seed)
        _save_csr(run.root / art, s)

    cached_stage(run, "reference_plt", key, [art], compute, log)
    return sp.load_npz(run.root / art).tocsr()


def run_ab(cfg: RunConfig, out: str | Path, log: Any = print) -> dict[str, Any]:
    """Base vs +LEVER with the same seed, features and trainer settings. Returns the comparison."""
    from lever_plugins.compare import format_table, paired_bootstrap
    from lever_plugins.compare.arms import arm_settings
    from lever_plugins.compare.arms import report as arms_report
    from lever_plugins.compare.arms import summary as arms_summary
    from lever_plugins.metrics import evaluate

    walls: dict[str, float] = {}
    t0 = time.perf_counter()
    ds = load_data(cfg)  # bad input fails here, before the run directory exists
    adapter = preflight(cfg)  # and so does a missing or drifted upstream
    sig = data_signature(ds)
    reg = plugins.baselines() if cfg.eval.baselines else {}
    chosen_baselines = {  # unknown names fail here too
        b: plugins.lookup(reg, b, "baseline", "eval.baselines").factory() for b in cfg.eval.baselines
    }
    walls["data"] = time.perf_counter() - t0
    with Run(out) as run:
        log(
            f"data {ds.name}: {len(ds.trn_texts)} train, {len(ds.tst_texts)} test, {ds.num_labels} labels"
            + (f" (hold-out {cfg.data.holdout:.0%} of train as test)" if cfg.data.holdout else "")
        )
        with stage(run, "features", log) as info:
            feats = features(ds, cfg, needed=getattr(adapter, "needs_features", True))
        walls["features"] = info["seconds"]

        arms = {arm: arm_inputs(run, ds, cfg, sig, feats, arm == "lever", log) for arm in ("base", "lever")}
        scores: dict[str, sp.csr_matrix] = {}
        metrics: dict[str, dict[str, float]] = {}
        ek = eval_kwargs(ds, cfg)
        settings: dict[str, dict[str, Any]] = {}
        for arm, (x, y, ukey) in arms.items():
            texts = arm_texts(ds, y.shape[0])
            s, stats = train_stage(
                run, arm, x, y, feats["tst"], cfg, ukey, log,
                texts=texts, context=arm_context(run, ds, arm, y.shape[0]),
                x_sparse=arm_sparse(feats, y.shape[0]),
            )  # fmt: skip
            settings[arm] = arm_settings(
                adapter=cfg.trainer.adapter, trainer=cfg.trainer, encoder=cfg.encoder, seed=cfg.seed,
                data_signature=sig, truth=ek["train_truth"], x_train=x, targets=y, x_test=feats["tst"], texts=texts,
            )  # fmt: skip
            scores[arm] = s
            metrics[arm] = evaluate(s, ds.y_tst, name=ds.name, **ek)
            write_json(run.root / arm / "metrics.json", metrics[arm])
            emit(run, "metrics", arm=arm, metrics=metrics[arm])

        t1 = time.perf_counter()
        boot = paired_bootstrap(
            scores["base"],
            scores["lever"],
            ds.y_tst,
            ek["train_truth"],
            n_boot=cfg.eval.bootstrap,
            confidence=cfg.eval.confidence,
            seed=cfg.seed,
            filter_pairs=ek["filter_pairs"],
            A=ek["A"],
            B=ek["B"],
        )
        table = format_table(boot, names=("base", "+LEVER"))
        rows = {"base": metrics["base"], "+LEVER": metrics["lever"]}
        check = arms_report(settings["base"], settings["lever"], {"teacher": cfgmod.to_dict(cfg.teacher),
                                                                  "soft_labels": cfgmod.to_dict(cfg.soft_labels)})
        log(arms_summary(check))
        if cfg.eval.reference == "plt":
            ref = reference_stage(run, ds, cfg, sig, log)
            metrics["plt"] = evaluate(ref, ds.y_tst, name=ds.name, **ek)
            write_json(run.root / "reference" / "metrics.json", metrics["plt"])
            rows["napkinXC PLT"] = metrics["plt"]
        extra = {}  # tail baselines: display name -> arm name in scores/metrics
        for name, bl in chosen_baselines.items():
            ctx = BaselineContext(run, ds, cfg, sig, feats, arms, scores, log)
            scores[name] = bl.run(ctx)
            metrics[name] = evaluate(scores[name], ds.y_tst, name=ds.name, **ek)
            write_json(run.root / "baselines" / name / "metrics.json", metrics[name])
            emit(run, "metrics", arm=name, metrics=metrics[name])
            rows[bl.title] = metrics[name]
            extra[bl.title] = name
        if len(rows) > 2:
            what = ["napkinXC PLT on TF-IDF, binary targets"] if "plt" in metrics else []
            what += ["tail baselines on the same features"] if extra else []
            table += f"\n\nReference, same split ({'; '.join(what)}):\n\n" + reference_table(rows, tuple(boot))
        write_compare(
            run, ds.name, len(ds.tst_texts), ds.num_labels, cfg.eval.bootstrap, cfg.eval.confidence,
            table + "\n\n" + arms_summary(check),
        )  # fmt: skip
        runs = {"base": scores["base"], "+LEVER": scores["lever"], **{t: scores[a] for t, a in extra.items()}}
        write_deciles(run, ds.name, runs, ds.y_tst, ek["train_truth"], ek["filter_pairs"])
        walls["compare"] = time.perf_counter() - t1
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
        log("\n" + table)
        return {"metrics": metrics, "bootstrap": boot, "table": table}
