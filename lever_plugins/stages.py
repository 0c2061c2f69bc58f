"""The LEVER stages as library calls: data, features, teacher, soft labels, one arm's training.

Each stage writes its artefacts into the run directory atomically and records its config hash and
checksums in ``manifest.json``; a re-run skips every stage whose inputs did not change. The A/B runner
(:mod:`lever_plugins.runner`) and the report writers (:mod:`lever_plugins.report`) sit on top of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins import config as cfgmod
from lever_plugins import distributed as dist
from lever_plugins import events, plugins
from lever_plugins.adapter import Adapter, Arm, LossFn
from lever_plugins.config import RunConfig, config_hash
from lever_plugins.data.dataset import Dataset
from lever_plugins.errors import ConfigError, LeverError
from lever_plugins.faults import crash_point
from lever_plugins.runs import Run, atomic_path
from lever_plugins.soft_labels.calibrate import resolved


def cache_dir() -> Path:
    """Shared embedding cache (``LEVER_CACHE_DIR``, else ~/.cache/lever-plugins): runs in different folders share it."""
    from lever_plugins.teacher.encoder import shared_cache_dir

    return shared_cache_dir()


def load_data(cfg: RunConfig) -> Dataset:
    """The configured data set, validated, after checking the plugins and models the run will need:
    every error a user can cause comes out here, before a run folder exists or anything is computed."""
    from lever_plugins.data import load_dataset

    check_plugins(cfg)
    if not cfg.data.path:
        raise ConfigError("no data set given", where="data.path", fix="pass --data DIR or set [data] path")
    ds = load_dataset(cfg.data.path, text=cfg.data.text, name=cfg.data.name or None)
    preflight_models(cfg)
    return prepare_split(ds, cfg)


def check_plugins(cfg: RunConfig) -> None:
    """Named plugins exist and take the configured options (cheap: no torch, no data); the teacher's and
    the adapter's own checks (models, upstream checkout) run too."""
    teacher = make_teacher(cfg)
    make_provider(cfg)
    with plugins.guard(_reg(plugins.teachers(), cfg.teacher.name, "teacher", "teacher.name"), "preflight"):
        teacher.preflight()
    adapter_factory(cfg)


def preflight_models(cfg: RunConfig) -> None:
    """The encoder resolves to a local folder whose config, tokenizer and weights load; the encoder's and
    trainer's devices exist (the teacher checks its own model and device in its ``preflight``)."""
    from lever_plugins.teacher.encoder import check_model, resolve_device, resolve_model

    try:
        folder = resolve_model(cfg.encoder.model)
    except LeverError as exc:
        raise LeverError(f"{exc.what}: {cfg.encoder.model}", where="encoder.model", fix=exc.fix) from None
    check_model(folder)
    for section, device in (("encoder", cfg.encoder.device), ("trainer", cfg.trainer.device)):
        try:
            resolve_device(device)
        except LeverError as exc:
            raise LeverError(exc.what, where=f"{section}.device", fix=exc.fix) from None


def _take_rows(y: sp.csr_matrix, texts: list[str], rows: np.ndarray) -> tuple[sp.csr_matrix, list[str]]:
    return y[rows].tocsr(), [texts[i] for i in rows]


def _filter_rows(pairs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Re-index (row, label) filter pairs after selecting ``rows`` (kept in that order)."""
    if len(pairs) == 0:
        return pairs
    pos = np.full(int(max(pairs[:, 0].max(), rows.max(initial=0))) + 1, -1, dtype=np.int64)
    pos[rows] = np.arange(len(rows))
    new = pos[pairs[:, 0]]
    keep = new >= 0
    return np.stack([new[keep], pairs[keep, 1]], axis=1).astype(np.int64)


def prepare_split(ds: Dataset, cfg: RunConfig) -> Dataset:
    """Apply max_train/max_test slices and the train hold-out (settings search never sees the test split).
    A sliced split keeps each row's original index (``trn_rows``/``tst_rows``: what ``rows.json`` saves)."""
    rng = np.random.default_rng(cfg.seed)
    y_trn, trn_texts, trn_filter = ds.y_trn, ds.trn_texts, ds.trn_filter
    y_tst, tst_texts, tst_filter = ds.y_tst, ds.tst_texts, ds.tst_filter
    trn_idx, tst_idx, tst_from = np.arange(y_trn.shape[0]), np.arange(y_tst.shape[0]), "test"
    if cfg.data.holdout > 0:
        perm = rng.permutation(y_trn.shape[0])
        n_val = int(round(cfg.data.holdout * len(perm)))
        val, trn = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        if n_val == 0 or len(trn) == 0 or y_trn[trn].nnz == 0:
            part = "hold-out" if n_val == 0 else "train part"
            raise ConfigError(
                f"data.holdout = {cfg.data.holdout} of {len(perm)} train rows leaves an empty {part} "
                f"({n_val} held out, {len(trn)} to train on)",
                where="[data] holdout",
                fix="choose a fraction that leaves rows (with labels) on both sides",
            )
        y_tst, tst_texts = _take_rows(y_trn, trn_texts, val)
        tst_filter = _filter_rows(trn_filter, val)
        y_trn, trn_texts = _take_rows(y_trn, trn_texts, trn)
        trn_filter = _filter_rows(trn_filter, trn)
        trn_idx, tst_idx, tst_from = trn, val, "train"
    if cfg.data.max_train and cfg.data.max_train < y_trn.shape[0]:
        rows = np.sort(rng.choice(y_trn.shape[0], cfg.data.max_train, replace=False))
        y_trn, trn_texts = _take_rows(y_trn, trn_texts, rows)
        trn_filter = _filter_rows(trn_filter, rows)
        trn_idx = trn_idx[rows]
    if cfg.data.max_test and cfg.data.max_test < y_tst.shape[0]:
        rows = np.sort(rng.choice(y_tst.shape[0], cfg.data.max_test, replace=False))
        y_tst, tst_texts = _take_rows(y_tst, tst_texts, rows)
        tst_filter = _filter_rows(tst_filter, rows)
        tst_idx = tst_idx[rows]
    whole_trn = len(trn_idx) == ds.y_trn.shape[0]
    whole_tst = tst_from == "test" and len(tst_idx) == ds.y_tst.shape[0]
    return replace(
        ds,
        y_trn=y_trn,
        trn_texts=trn_texts,
        trn_filter=trn_filter,
        y_tst=y_tst,
        tst_texts=tst_texts,
        tst_filter=tst_filter,
        trn_uids=None,
        tst_uids=None,
        trn_rows=None if whole_trn else trn_idx.astype(np.int64),
        tst_rows=None if whole_tst else tst_idx.astype(np.int64),
        tst_from=tst_from,
    )


def save_rows(run: Run, ds: Dataset) -> None:
    """``rows.json`` of a sliced run: each train and test row's index in its original split file, so that
    ``lever eval --rows`` re-evaluates the run's scores against the original label files."""
    if ds.trn_rows is None and ds.tst_rows is None:
        return
    from lever_plugins.runs import write_json

    n_trn, n_tst = ds.y_trn.shape[0], ds.y_tst.shape[0]
    write_json(run.root / "rows.json", {
        "train": {"split": "train", "rows": (ds.trn_rows if ds.trn_rows is not None else np.arange(n_trn)).tolist()},
        "test": {"split": ds.tst_from,
                 "rows": (ds.tst_rows if ds.tst_rows is not None else np.arange(n_tst)).tolist()},
    })  # fmt: skip


def data_signature(ds: Dataset) -> str:
    """Content hash of what the stages consume: texts and matrices (not file paths or mtimes)."""
    h = hashlib.sha256()
    for texts in (ds.trn_texts, ds.tst_texts, ds.lbl_texts):
        h.update(str(len(texts)).encode())
        for t in texts:
            h.update(hashlib.sha1(t.encode()).digest())
    for m in (ds.y_trn, ds.y_tst):
        m = m.tocsr()
        for a in (m.indptr, m.indices, m.data):
            h.update(np.ascontiguousarray(a).tobytes())
    for f in (ds.trn_filter, ds.tst_filter):
        h.update(np.ascontiguousarray(f, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def emit(run: Run, event: str, **payload: Any) -> None:
    plugins.get_plugin_manager().hook.lever_run_event(run=run, event=event, payload=payload)


@contextlib.contextmanager
def stage(run: Run, name: str, log: Any = None) -> Iterator[dict[str, Any]]:
    info: dict[str, Any] = {"stage": name}
    emit(run, "stage_start", **info)
    t0 = time.perf_counter()
    yield info
    info["seconds"] = time.perf_counter() - t0
    getattr(run, "timings", []).append(info)
    emit(run, "stage_end", **info)
    if log:
        log(f"[{name}] {info['seconds']:.1f}s" + (" (cached)" if info.get("cached") else ""))


def encoder_key(cfg: RunConfig) -> dict[str, Any]:
    """The encoder settings a stage's key depends on: ``amp`` counts as the precision it gives the features,
    and only when that is CPU bf16, so float32 runs keep the keys they had before ``amp`` existed."""
    import dataclasses

    from lever_plugins.teacher.encoder import encode_precision

    d = dataclasses.asdict(cfg.encoder)
    amp = d.pop("amp", False)
    if encode_precision(cfg.encoder.device, amp) == "bf16":
        d["precision"] = "bf16"
    return d


def features(ds: Dataset, cfg: RunConfig, progress: bool = True, needed: bool = True) -> dict[str, np.ndarray]:
    """Frozen-encoder features of train docs, test docs and label texts (cached by text hash).
    ``needed=False`` (trainers that encode text themselves) gives zero-width arrays instead."""
    from lever_plugins.teacher.encoder import embed_cached

    if not needed:
        return {
            k: np.zeros((len(t), 0), np.float32)
            for k, t in (("trn", ds.trn_texts), ("tst", ds.tst_texts), ("lbl", ds.lbl_texts))
        }
    e = cfg.encoder
    out = {}
    for key, texts in (("trn", ds.trn_texts), ("tst", ds.tst_texts), ("lbl", ds.lbl_texts)):
        out[key] = embed_cached(
            texts, e.model, e.max_len, cache_dir() / "embeddings", batch_size=e.batch_size, device=e.device,
            amp=e.amp,
        )
    if e.tfidf:  # fitted on the training documents only, so both arms see the same vocabulary
        from lever_plugins.tfidf import tfidf_features

        (out["trn_sparse"], out["tst_sparse"], out["lbl_sparse"]), _ = tfidf_features(
            ds.trn_texts, ds.tst_texts, ds.lbl_texts, min_df=e.tfidf_min_df
        )
    return out


def arm_sparse(feats: dict[str, Any], rows: int) -> tuple[sp.csr_matrix, sp.csr_matrix] | None:
    """(train rows, test rows) sparse features of an arm (label rows after the documents), if any."""
    if "trn_sparse" not in feats:
        return None
    trn = feats["trn_sparse"]
    if rows > trn.shape[0]:
        trn = sp.vstack([trn, feats["lbl_sparse"][: rows - trn.shape[0]]], format="csr")
    return trn, feats["tst_sparse"]


def _save_npz_arrays(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
        crash_point("write", f"{path.parent.name}/{path.name}")


def save_csr(path: Path, m: sp.csr_matrix) -> None:
    """Write ``m`` as .npz atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        sp.save_npz(tmp, m.tocsr())
        crash_point("write", f"{path.parent.name}/{path.name}")


def cached_stage(
    run: Run,
    name: str,
    key: str,
    arts: list[str],
    compute: Callable[[], dict | None],
    log: Any = None,
    uses: list[dict[str, Any]] | None = None,
) -> dict:
    """Run ``compute()`` (which writes ``arts`` atomically and returns its stats) unless stage ``name``
    already finished with the same key and intact artefacts; return the stage's stats.

    ``uses``: the plugins whose code the stage runs (:func:`lever_plugins.plugins.fingerprint`): they are
    part of the key (editing a plugin's source recomputes the stages it answers) and named in the manifest.

    Under torchrun every rank calls this (``compute`` may hold collective steps); rank 0 alone reads and
    writes the manifest and tells the others whether the stage is cached."""
    uses = sorted(uses or [], key=lambda u: (u["dist"], u["plugin"]))
    key = stage_key(key, uses)
    with stage(run, name, log) as info:
        info["key"] = key
        if dist.broadcast_object(run.stage_done(name, key, arts) if dist.is_main() else None):
            info["cached"] = True
            return dist.broadcast_object(run.manifest()["stages"][name].get("stats", {}) if dist.is_main() else None)
        t0 = time.perf_counter()
        with events.bound(run, name):
            stats = compute() or {}
        crash_point("stage", name, "computed")
        if dist.is_main():
            run.record_stage(name, key, arts, time.perf_counter() - t0, stats=stats, plugins=uses)
            for art in arts:
                emit(run, "artifact", stage=name, name=art, path=str((run.root / art).resolve()))
        dist.barrier()
        return stats


def stage_key(key: str, uses: list[dict[str, Any]]) -> str:
    """A stage's key with the fingerprints of the plugins it runs (unchanged when there are none)."""
    return config_hash(key, sorted(uses, key=lambda u: (u["dist"], u["plugin"]))) if uses else key


def _reg(registry: dict[str, plugins.Registered], name: str, kind: str, option: str) -> plugins.Registered:
    return plugins.lookup(registry, name, kind, option)


def make_teacher(cfg: RunConfig) -> Any:
    """``factory(config, seed=seed, **options)``: the ``[teacher]`` settings, the teacher's seed (``[teacher]
    seed``, else the run's) and ``[teacher.options]``, checked against the factory's signature first."""
    r = _reg(plugins.teachers(), cfg.teacher.name, "teacher", "teacher.name")
    opts = cfg.teacher.options
    plugins.check_call(r, "teacher", "[teacher.options]", (cfg.teacher,), opts, fixed={"seed": 0})
    with plugins.guard(r, "factory"):
        return r.factory(cfg.teacher, seed=cfg.teacher.seed or cfg.seed, **opts)


def make_provider(cfg: RunConfig, n_labels: int | None = None) -> Any:
    """``factory(config, **options)``: the ``[soft_labels]`` settings and ``[soft_labels.options]``; with
    ``n_labels``, ``calibration = "auto"`` is made concrete first, so a plugin provider sees a named method."""
    scfg = cfg.soft_labels if n_labels is None else resolved(cfg.soft_labels, n_labels)
    r = _reg(plugins.soft_label_providers(), scfg.provider, "soft-label provider", "soft_labels.provider")
    plugins.check_call(r, "soft-label provider", "[soft_labels.options]", (scfg,), scfg.options)
    with plugins.guard(r, "factory"):
        return r.factory(scfg, **scfg.options)


def make_baseline(cfg: RunConfig, name: str) -> tuple[Any, plugins.Registered]:
    """``factory(**options)`` with the ``[baselines.<name>]`` table."""
    r = _reg(plugins.baselines(), name, "baseline", "eval.baselines")
    opts = cfg.baselines.get(name, {})
    plugins.check_call(r, "baseline", f"[baselines.{name}]", (), opts)
    with plugins.guard(r, "factory"):
        return r.factory(**opts), r


def hook_uses(hook: str) -> list[dict[str, Any]]:
    """Fingerprints of the plugins implementing ``hook`` (any of them may answer a firstresult hook)."""
    return [plugins.fingerprint(p) for p in plugins.implementers(hook)]


def teacher_stage(
    run: Run, ds: Dataset, cfg: RunConfig, sig: str, log: Any = None
) -> tuple[dict[str, np.ndarray | None], str]:
    """Train (or reuse) the teacher and return its embeddings: ``lbl`` (label side), ``doc`` (training
    documents, out-of-fold for a teacher with ``fit_embeddings``; when tau_d > 0 or in dense mode) and
    ``lbl_doc`` (label texts on the document side, for the label rows in dense mode)."""
    tcfg = cfg.teacher
    dense = cfg.soft_labels.mode == "dense"
    need_docs = cfg.soft_labels.tau_d > 0 or dense
    r = _reg(plugins.teachers(), tcfg.name, "teacher", "teacher.name")
    uses = [plugins.fingerprint(r.plugin)]
    key = cfgmod.config_hash(sig, tcfg, tcfg.seed or cfg.seed, need_docs, *(["dense"] if dense else []))
    art = "teacher/embeddings.npz"

    def compute() -> dict:
        teacher = make_teacher(cfg)
        with plugins.guard(r, "fit"):
            stats = teacher.fit(ds.trn_texts, ds.lbl_texts, ds.binary_train(), run.root / "teacher", resume=True)
        with plugins.guard(r, "embed"):
            # optional teacher methods: a label side that differs from the document side, and out-of-fold
            # embeddings of the documents it was fitted on (so the student does not learn its overfit)
            lbl = getattr(teacher, "embed_labels", teacher.embed)(ds.lbl_texts)
            doc = np.zeros((0, lbl.shape[1]), np.float32)
            if need_docs:
                oof = getattr(teacher, "fit_embeddings", None)
                doc = oof() if oof is not None else teacher.embed(ds.trn_texts)
            lbl_doc = teacher.embed(ds.lbl_texts) if dense else np.zeros((0, lbl.shape[1]), np.float32)
        if dist.is_main():
            _save_npz_arrays(run.root / art, lbl=lbl, doc=doc, lbl_doc=lbl_doc)
        return stats

    cached_stage(run, "teacher", key, [art], compute, log, uses=uses)
    z = np.load(run.root / art)
    # downstream stages key on this one's key, so they see its plugins too
    return {"lbl": z["lbl"], "doc": z["doc"] if need_docs else None,
            "lbl_doc": z["lbl_doc"] if dense else None}, stage_key(key, uses)  # fmt: skip


def holdout_split(n: int, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out rows, the rest) of ``n`` training documents: a seeded ``frac`` (at least one), both sorted."""
    perm = np.random.default_rng(seed).permutation(n)
    n_hold = max(1, int(round(frac * n)))
    return np.sort(perm[:n_hold]), np.sort(perm[n_hold:])


def holdout_arm(
    run: Run, ds: Dataset, cfg: RunConfig, name: str, feats: dict[str, Any], x: np.ndarray,
    targets: sp.csr_matrix, hold: np.ndarray, rest: np.ndarray, dense: Any = None,
) -> Arm:
    """An arm (rows ``x``/``targets``: N documents, then any label rows) trained on the ``rest`` documents and
    every label row, and scored on the ``hold`` documents against their own labels, with the same input as the
    full arm (TF-IDF head included) and ``dense`` targets, if any, cut to the same rows."""
    n = ds.y_trn.shape[0]
    rows = np.concatenate([rest, np.arange(n, targets.shape[0])])
    y = ds.binary_train()
    sparse = arm_sparse(feats, targets.shape[0])
    all_texts = ds.trn_texts + ds.lbl_texts
    arm = make_arm(
        run, ds, cfg, name, x[rows], targets[rows], feats["trn"][hold],
        x_sparse=None if sparse is None else (sparse[0][rows], sparse[0][hold]),
        texts=([all_texts[i] for i in rows], [ds.trn_texts[i] for i in hold]), y_train=y[rest], y_test=y[hold],
    )  # fmt: skip
    if dense is None:
        return arm
    return replace(arm, dense=replace(dense, hard=dense.hard[rows], rows=dense.rows[rows]))


CALIBRATION_ART = "soft/calibration.json"


def _auto_selects(ds: Dataset, cfg: RunConfig) -> bool:
    from lever_plugins.soft_labels.calibrate import auto_selects

    return auto_selects(cfg.soft_labels, ds.y_trn.shape[0], ds.num_labels, cfg.trainer.adapter, cfg.trainer.finetune)


def calibration_choice(run: Run, ds: Dataset, cfg: RunConfig) -> dict | None:
    """The hold-out choice of :func:`calibration_stage` ({"method", "a", "c", "holdout_select", ...}) when
    this run makes one (:func:`~lever_plugins.soft_labels.calibrate.auto_selects`), else None (the rule)."""
    import json

    if not _auto_selects(ds, cfg):
        return None
    path = run.root / CALIBRATION_ART
    if not path.is_file():  # the stage runs before any caller: a missing choice is a pipeline bug
        raise LeverError(f"calibration = 'auto' needs the calibration_select stage's {CALIBRATION_ART}",
                         where=str(path))  # fmt: skip
    return json.loads(path.read_text())


def calibration_stage(
    run: Run, ds: Dataset, cfg: RunConfig, feats: dict[str, Any], x: np.ndarray, targets: sp.csr_matrix, skey: str,
    log: Any = None,
) -> str:
    """``calibration = "auto"`` on a small dense run: fit the +LEVER student with each calibration of
    ``AUTO_CANDIDATES`` on 80 % of train (and the label rows), score the other 20 % by
    ``soft_labels.calibration_select`` and keep the best (ties: the first listed, linear first). Writes
    ``soft/calibration.json``; returns the arm's cache key with the choice in it (``skey`` unchanged when
    the rule decides). Each fit is a stage of its own (``train_calibration_<candidate name>``)."""
    from lever_plugins.baselines import select_metric
    from lever_plugins.metrics import evaluate
    from lever_plugins.soft_labels.calibrate import AUTO_CANDIDATES, SELECT_HOLDOUT, candidate_name

    s = cfg.soft_labels
    if not _auto_selects(ds, cfg):
        return skey
    hold, rest = holdout_split(ds.y_trn.shape[0], SELECT_HOLDOUT, cfg.seed)
    y = ds.binary_train()
    ek = eval_kwargs(ds, cfg)
    cands = {candidate_name(*cand): cand for cand in AUTO_CANDIDATES}
    first = dense_targets(run, ds, cfg, targets.shape[0], calibration=AUTO_CANDIDATES[0])  # read once
    values, fits = {}, []
    for name, (method, a, c) in cands.items():
        dense = replace(first, calibration=method, a=a, c=c)
        arm = holdout_arm(run, ds, cfg, f"calibration_{name}", feats, x, targets, hold, rest, dense)
        ukey = config_hash(skey, "calibration", method, a, c, SELECT_HOLDOUT, cfg.seed, arm.x_sparse is not None)
        scores, _ = train_stage(run, arm, cfg, ukey, log)
        m = evaluate(scores, y[hold], train_truth=y[rest], k=cfgmod.select_ks(s.calibration_select), A=ek["A"],
                     B=ek["B"], filter_pairs=_filter_rows(ds.trn_filter, hold))  # fmt: skip
        values[name] = select_metric(m, s.calibration_select, "soft_labels.calibration_select")
        fits.append({"name": name, "method": method, "a": a, "c": c, "metrics": m})
    best = max(values.values())
    name = next(n for n in cands if values[n] == best)  # ties: the first listed
    method, a, c = cands[name]
    choice = {"name": name, "method": method, "a": a, "c": c, "select": s.calibration_select, "holdout": SELECT_HOLDOUT,
              "n_holdout": len(hold), "holdout_select": values, "fits": fits}  # fmt: skip
    key = config_hash(skey, "calibration_select", s.calibration_select, SELECT_HOLDOUT, cfg.seed, values)

    def compute() -> dict:
        from lever_plugins.runs import write_json

        write_json(run.root / CALIBRATION_ART, choice)
        if log:
            log(f"[calibration] auto: {name} ({s.calibration_select} on a {SELECT_HOLDOUT:.0%} train hold-out: "
                + ", ".join(f"{k} {v:.4f}" for k, v in values.items()) + ")")  # fmt: skip
        return {"method": name, "holdout_select": values}

    cached_stage(run, "calibration_select", key, [CALIBRATION_ART], compute, log)
    return config_hash(skey, method, a, c)


def dense_targets(
    run: Run, ds: Dataset, cfg: RunConfig, rows: int, y_aug: sp.csr_matrix | None = None,
    calibration: tuple[str, float, float] | None = None,
) -> Any:
    """The +LEVER arm's :class:`~lever_plugins.soft_labels.dense.DenseTargets` (``[soft_labels] mode =
    "dense"``) from the teacher and soft-label stages' artefacts (``y_aug``: the soft stage's hard matrix,
    if the caller has it loaded already); None in sparse mode. ``calibration``: (method, a, c) instead of
    the configured one ("auto": the hold-out choice where the run makes one, else the label-count rule)."""
    s = cfg.soft_labels
    if s.mode != "dense":
        return None
    from lever_plugins.soft_labels.dense import DenseTargets

    z = np.load(run.root / "teacher/embeddings.npz")
    if y_aug is None:
        y_aug = sp.load_npz(run.root / "soft/y_aug.npz").tocsr()
    hard = y_aug.astype(np.float32)[:rows]
    n = ds.y_trn.shape[0]
    emb = np.vstack([z["doc"], z["lbl_doc"][: rows - n]]) if rows > n else z["doc"][:rows]
    if calibration is not None:
        s = replace(s, calibration=calibration[0], sigmoid_a=calibration[1], sigmoid_c=calibration[2])
    else:
        s = resolved(s, z["lbl"].shape[0], calibration_choice(run, ds, cfg))
    return DenseTargets(hard=hard, rows=np.ascontiguousarray(emb, np.float32), labels=z["lbl"], lam=s.blend_lambda,
                        calibration=s.calibration, a=s.sigmoid_a, c=s.sigmoid_c, truth=s.dense_truth,
                        start=s.dense_init, head=s.dense_head, truth_weight=s.dense_truth_weight)  # fmt: skip


def soft_stage(run: Run, ds: Dataset, cfg: RunConfig, temb: dict, teacher_key: str, log: Any = None):
    scfg = cfg.soft_labels
    r = _reg(plugins.soft_label_providers(), scfg.provider, "soft-label provider", "soft_labels.provider")
    uses = [plugins.fingerprint(r.plugin), *hook_uses("lever_blend_targets")]
    key = cfgmod.config_hash(teacher_key, cfgmod.soft_key(scfg))
    arts = ["soft/y_aug.npz", "soft/soft.npz", "soft/targets.npz"]

    def compute() -> dict:
        provider = make_provider(cfg, ds.num_labels)
        has_text = np.array([bool(t.strip()) for t in ds.lbl_texts])
        with plugins.guard(r, "build"):
            sl = provider.build(ds.binary_train(), temb["doc"], temb["lbl"], has_text=has_text)
        with plugins.guard_hook("lever_blend_targets"):
            targets = plugins.get_plugin_manager().hook.lever_blend_targets(
                y=sl.y_aug, soft=sl.soft, config=resolved(scfg, ds.num_labels))
        targets = sp.csr_matrix(targets, dtype=np.float32)
        for name, m in zip(arts, (sl.y_aug, sl.soft, targets), strict=True):
            save_csr(run.root / name, m)
        return sl.stats

    cached_stage(run, "soft_labels", key, arts, compute, log, uses=uses)
    return sp.load_npz(run.root / arts[2]).tocsr().astype(np.float32), stage_key(key, uses)


def make_adapter(cfg: RunConfig) -> Adapter:
    """The configured adapter, built with ``[trainer] options`` as keyword arguments."""
    r = _reg(plugins.adapters(), cfg.trainer.adapter, "adapter", "trainer.adapter")
    with plugins.guard(r, "factory"):
        return adapter_factory(cfg)(**cfg.trainer.options)


def adapter_factory(cfg: RunConfig) -> Any:
    """The configured adapter's factory, checked to take ``[trainer] options`` as keyword arguments."""
    r = _reg(plugins.adapters(), cfg.trainer.adapter, "adapter", "trainer.adapter")
    plugins.check_call(r, "adapter", "[trainer] options", (), cfg.trainer.options)
    return r.factory


def loss_fn(tcfg: Any) -> LossFn:
    """The ``lever_loss`` hook bound to the run's TrainerConfig: what adapters get as ``loss``."""
    hook = plugins.get_plugin_manager().hook.lever_loss

    def loss(logits: Any, targets: Any) -> Any:
        with plugins.guard_hook("lever_loss"):
            return hook(logits=logits, targets=targets, config=tcfg)

    return loss


def preflight(cfg: RunConfig) -> Adapter:
    """Build the adapter and check, from its declared capabilities, that it can run this config, then its
    own ``preflight`` (upstream checkout, solver settings): all before any stage runs."""
    adapter = make_adapter(cfg)
    name = cfg.trainer.adapter
    if cfg.trainer.finetune and not adapter.supports_finetune:
        raise ConfigError(
            f"adapter {name!r} cannot fine-tune the encoder (trainer.finetune = true)",
            where="[trainer] finetune",
            fix='set finetune = false, or use adapter = "builtin"',
        )
    if cfg.encoder.tfidf and not adapter.takes_sparse:
        raise ConfigError(
            f"adapter {name!r} takes no sparse features",
            where="[encoder] tfidf",
            fix="set tfidf = false for this adapter",
        )
    losses = plugins.loss_plugins()
    if losses and not adapter.takes_loss_hook:
        raise ConfigError(
            f"adapter {name!r} cannot take a plugin loss, and lever_loss is answered by "
            f"{', '.join(map(plugins.describe, losses))}: it would be ignored",
            where="lever_loss hook",
            fix="exclude the loss plugin (LEVER_LOAD_PLUGINS, or uninstall it), or use an adapter that takes it "
            "(builtin, renee, elias, cascadexml)",
        )
    blends = plugins.third_party("lever_blend_targets")
    if cfg.soft_labels.mode == "dense" and blends:
        raise ConfigError(
            f"soft_labels.mode = 'dense' forms its targets on the fly and would bypass lever_blend_targets, "
            f"answered by {', '.join(map(plugins.describe, blends))}",
            where="[soft_labels] mode",
            fix="use mode = 'sparse' with this plugin, or exclude it (LEVER_LOAD_PLUGINS)",
        )
    r = _reg(plugins.adapters(), name, "adapter", "trainer.adapter")
    with plugins.guard(r, "preflight"):
        adapter.preflight(cfg.trainer)
    return adapter


def make_arm(
    run: Run,
    ds: Dataset,
    cfg: RunConfig,
    name: str,
    x_train: np.ndarray,
    targets: sp.csr_matrix,
    x_test: np.ndarray,
    x_sparse: tuple[sp.csr_matrix, sp.csr_matrix] | None = None,
    support: sp.csr_matrix | None = None,
    texts: tuple[list[str], list[str]] | None = None,
    y_train: sp.csr_matrix | None = None,
    y_test: sp.csr_matrix | None = None,
) -> Arm:
    """The :class:`Arm` of one trainer call. Defaults: texts of the N (+ L) training rows and the test
    documents, the data set's binary train and test matrices, ``support`` = the targets' own pattern
    (binary targets; the +LEVER arm passes the hard augmented matrix)."""
    targets = sp.csr_matrix(targets, dtype=np.float32)
    trn_texts, tst_texts = texts if texts is not None else arm_texts(ds, targets.shape[0])
    if support is None:
        support = targets.copy()
        support.data[:] = 1.0
    tcfg = cfg.trainer
    own_split = y_test is not None  # a hold-out of train: the test split's filter pairs do not apply
    return Arm(
        name=name,
        workdir=run.root / name,
        targets=targets,
        support=sp.csr_matrix(support, dtype=np.float32),
        y_train=ds.binary_train() if y_train is None else y_train,
        y_test=ds.y_tst if y_test is None else y_test,
        trn_texts=list(trn_texts),
        tst_texts=list(tst_texts),
        lbl_texts=list(ds.lbl_texts),
        tst_filter=np.zeros((0, 2), np.int64) if own_split else ds.tst_filter,
        seed=cfg.seed,
        x_train=x_train,
        x_test=x_test,
        x_sparse=x_sparse,
        dataset=ds.name,
        encoder=cfg.encoder,
        encoder_dir=run.root / name / "encoder",
        upstream=Path(tcfg.upstream).resolve() if tcfg.upstream else None,
        upstream_args=tuple(tcfg.upstream_args),
        top_k=tcfg.top_k,
    )


def train_stage(run: Run, arm: Arm, cfg: RunConfig, upstream_key: str, log: Any = None) -> tuple[sp.csr_matrix, dict]:
    """Train one arm through the configured adapter: ``adapter.train_predict(arm, config, loss)``, cached
    as stage ``train_<arm>`` keyed by the arm's inputs (``upstream_key``), the trainer and encoder settings
    and the adapter's and ``lever_loss`` plugins."""
    r = _reg(plugins.adapters(), cfg.trainer.adapter, "adapter", "trainer.adapter")
    uses = [plugins.fingerprint(r.plugin), *hook_uses("lever_loss")]
    key = cfgmod.config_hash(upstream_key, cfgmod.trainer_key(cfg.trainer), encoder_key(cfg), cfg.seed, arm.name)
    art = f"{arm.name}/scores.npz"
    arts = [art] + (
        [f"{arm.name}/encoder/config.json", f"{arm.name}/encoder/model.safetensors"] if cfg.trainer.finetune else []
    )

    def compute() -> dict:
        adapter = make_adapter(cfg)
        with plugins.guard(r, "train_predict"):
            scores, stats = adapter.train_predict(arm, cfg.trainer, loss_fn(cfg.trainer))
        save_csr(run.root / art, scores)
        return stats

    stats = cached_stage(run, f"train_{arm.name}", key, arts, compute, log, uses=uses)
    return sp.load_npz(run.root / art).tocsr(), stats


def eval_kwargs(ds: Dataset, cfg: RunConfig) -> dict[str, Any]:
    from lever_plugins.metrics import propensity_ab

    A, B = propensity_ab(ds.name)
    return {
        "train_truth": ds.binary_train(),
        "k": tuple(cfg.eval.k),
        "A": cfg.eval.A if cfg.eval.A is not None else A,
        "B": cfg.eval.B if cfg.eval.B is not None else B,
        "filter_pairs": ds.tst_filter,
    }


def arm_inputs(
    run: Run, ds: Dataset, cfg: RunConfig, sig: str, feats: dict[str, np.ndarray], lever: bool, log: Any = None
) -> tuple[np.ndarray, sp.csr_matrix, str]:
    """Training rows, targets and upstream cache key of one arm. Base: N rows, binary targets.
    +LEVER: N + L rows (label texts as documents) with the blended soft targets."""
    if not lever:
        return feats["trn"], ds.binary_train(), cfgmod.config_hash(sig)
    temb, tkey = teacher_stage(run, ds, cfg, sig, log)
    targets, skey = soft_stage(run, ds, cfg, temb, tkey, log)
    n = ds.y_trn.shape[0]
    x = feats["trn"]
    if targets.shape[0] > n:
        x = np.vstack([x, feats["lbl"][: targets.shape[0] - n]])
    return x, targets, calibration_stage(run, ds, cfg, feats, x, targets, skey, log)


def arm_texts(ds: Dataset, rows: int) -> tuple[list[str], list[str]]:
    """Texts of an arm's training rows (documents, then label texts for the N + L rows) and test rows."""
    n = len(ds.trn_texts)
    return ds.trn_texts + ds.lbl_texts[: rows - n], ds.tst_texts


def arm_of(run: Run, ds: Dataset, cfg: RunConfig, name: str, feats: dict[str, Any], x: np.ndarray,
           y: sp.csr_matrix) -> Arm:
    """The Arm of the A/B arm ``name`` ("base" or "lever") from :func:`arm_inputs`' rows and targets."""
    support = None if name == "base" else sp.load_npz(run.root / "soft/y_aug.npz").tocsr()
    arm = make_arm(run, ds, cfg, name, x, y, feats["tst"], x_sparse=arm_sparse(feats, y.shape[0]), support=support)
    return arm if name == "base" else replace(arm, dense=dense_targets(run, ds, cfg, y.shape[0], support))
