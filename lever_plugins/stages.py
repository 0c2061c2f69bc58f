"""The LEVER stages as library calls: data, features, teacher, soft labels, one arm's training.

Each stage writes its artefacts into the run directory atomically and records its config hash and
checksums in ``manifest.json``; a re-run skips every stage whose inputs did not change. The A/B runner
(:mod:`lever_plugins.runner`) and the report writers (:mod:`lever_plugins.report`) sit on top of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins import config as cfgmod
from lever_plugins import distributed as dist
from lever_plugins import plugins
from lever_plugins.config import RunConfig
from lever_plugins.data.dataset import Dataset
from lever_plugins.errors import ConfigError
from lever_plugins.faults import crash_point
from lever_plugins.runs import Run, atomic_path

LEVER_CACHE_ENV = "LEVER_CACHE_DIR"


def cache_dir() -> Path:
    """Shared embedding cache: keyed by (model, text hash, max_len), so runs in different folders share it."""
    root = os.environ.get(LEVER_CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "lever-plugins"
    )
    return Path(root)


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
    """Named plugins exist and take the configured options (cheap: no torch, no data)."""
    plugins.lookup(plugins.teachers(), cfg.teacher.name, "teacher", "teacher.name")
    plugins.lookup(plugins.soft_label_providers(), cfg.soft_labels.provider, "soft-label provider",
                   "soft_labels.provider")  # fmt: skip
    adapter_factory(cfg)


def preflight_models(cfg: RunConfig) -> None:
    """The encoder (and the built-in teacher's model) resolve to local folders."""
    from lever_plugins.errors import LeverError
    from lever_plugins.teacher.encoder import resolve_model

    names = [("encoder", cfg.encoder.model)]
    if cfg.teacher.name == "siamese":
        names.append(("teacher", cfg.teacher.model))
    for section, name in names:
        try:
            resolve_model(name)
        except LeverError as exc:
            raise LeverError(f"{exc.what}: {name}", where=f"{section}.model", fix=exc.fix) from None


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
    """Apply max_train/max_test slices and the train hold-out (settings search never sees the test split)."""
    rng = np.random.default_rng(cfg.seed)
    y_trn, trn_texts, trn_filter = ds.y_trn, ds.trn_texts, ds.trn_filter
    y_tst, tst_texts, tst_filter = ds.y_tst, ds.tst_texts, ds.tst_filter
    if cfg.data.holdout > 0:
        perm = rng.permutation(y_trn.shape[0])
        n_val = int(round(cfg.data.holdout * len(perm)))
        val, trn = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        y_tst, tst_texts = _take_rows(y_trn, trn_texts, val)
        tst_filter = _filter_rows(trn_filter, val)
        y_trn, trn_texts = _take_rows(y_trn, trn_texts, trn)
        trn_filter = _filter_rows(trn_filter, trn)
    if cfg.data.max_train and cfg.data.max_train < y_trn.shape[0]:
        rows = np.sort(rng.choice(y_trn.shape[0], cfg.data.max_train, replace=False))
        y_trn, trn_texts = _take_rows(y_trn, trn_texts, rows)
        trn_filter = _filter_rows(trn_filter, rows)
    if cfg.data.max_test and cfg.data.max_test < y_tst.shape[0]:
        rows = np.sort(rng.choice(y_tst.shape[0], cfg.data.max_test, replace=False))
        y_tst, tst_texts = _take_rows(y_tst, tst_texts, rows)
        tst_filter = _filter_rows(tst_filter, rows)
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
    )


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
    emit(run, "stage_end", **info)
    if log:
        log(f"[{name}] {info['seconds']:.1f}s" + (" (cached)" if info.get("cached") else ""))


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
            texts, e.model, e.max_len, cache_dir() / "embeddings", batch_size=e.batch_size, device=e.device
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


def _save_csr(path: Path, m: sp.csr_matrix) -> None:
    with atomic_path(path) as tmp:
        sp.save_npz(tmp, m.tocsr())
        crash_point("write", f"{path.parent.name}/{path.name}")


def cached_stage(
    run: Run, name: str, key: str, arts: list[str], compute: Callable[[], dict | None], log: Any = None
) -> dict:
    """Run ``compute()`` (which writes ``arts`` atomically and returns its stats) unless stage ``name``
    already finished with config hash ``key`` and intact artefacts; return the stage's stats.

    Under torchrun every rank calls this (``compute`` may hold collective steps); rank 0 alone reads and
    writes the manifest and tells the others whether the stage is cached."""
    with stage(run, name, log) as info:
        info["key"] = key
        if dist.broadcast_object(run.stage_done(name, key, arts) if dist.is_main() else None):
            info["cached"] = True
            return dist.broadcast_object(run.manifest()["stages"][name].get("stats", {}) if dist.is_main() else None)
        t0 = time.perf_counter()
        stats = compute() or {}
        crash_point("stage", name, "computed")
        if dist.is_main():
            run.record_stage(name, key, arts, time.perf_counter() - t0, stats=stats)
        dist.barrier()
        return stats


def teacher_stage(
    run: Run, ds: Dataset, cfg: RunConfig, sig: str, log: Any = None
) -> tuple[dict[str, np.ndarray | None], str]:
    """Train (or reuse) the teacher and return its label (and, when tau_d > 0, train-doc) embeddings."""
    tcfg = cfg.teacher
    need_docs = cfg.soft_labels.tau_d > 0
    key = cfgmod.config_hash(sig, tcfg, tcfg.seed or cfg.seed, need_docs)
    art = "teacher/embeddings.npz"

    def compute() -> dict:
        if tcfg.name == "siamese" and not tcfg.train:
            # The pre-trained encoder as teacher: its embeddings are shared with every other run.
            from lever_plugins.teacher.encoder import embed_cached

            def embed(texts: list[str]) -> np.ndarray:
                return embed_cached(texts, tcfg.model, tcfg.max_len, cache_dir() / "embeddings", device=tcfg.device)

            stats = {"trained": False}
        else:
            factory = plugins.lookup(plugins.teachers(), tcfg.name, "teacher", "teacher.name").factory
            teacher = factory(tcfg, seed=tcfg.seed or cfg.seed)
            stats = teacher.fit(ds.trn_texts, ds.lbl_texts, ds.binary_train(), run.root / "teacher", resume=True)
            embed = teacher.embed
        lbl = embed(ds.lbl_texts)
        doc = embed(ds.trn_texts) if need_docs else np.zeros((0, lbl.shape[1]), np.float32)
        if dist.is_main():
            _save_npz_arrays(run.root / art, lbl=lbl, doc=doc)
        return stats

    cached_stage(run, "teacher", key, [art], compute, log)
    z = np.load(run.root / art)
    return {"lbl": z["lbl"], "doc": z["doc"] if need_docs else None}, key


def soft_stage(run: Run, ds: Dataset, cfg: RunConfig, temb: dict, teacher_key: str, log: Any = None):
    scfg = cfg.soft_labels
    key = cfgmod.config_hash(teacher_key, scfg)
    arts = ["soft/y_aug.npz", "soft/soft.npz", "soft/targets.npz"]

    def compute() -> dict:
        provider = plugins.lookup(
            plugins.soft_label_providers(), scfg.provider, "soft-label provider", "soft_labels.provider"
        ).factory(scfg)
        has_text = np.array([bool(t.strip()) for t in ds.lbl_texts])
        sl = provider.build(ds.binary_train(), temb["doc"], temb["lbl"], has_text=has_text)
        targets = plugins.get_plugin_manager().hook.lever_blend_targets(y=sl.y_aug, soft=sl.soft, config=scfg)
        targets = sp.csr_matrix(targets, dtype=np.float32)
        for name, m in zip(arts, (sl.y_aug, sl.soft, targets), strict=True):
            _save_csr(run.root / name, m)
        return sl.stats

    cached_stage(run, "soft_labels", key, arts, compute, log)
    return sp.load_npz(run.root / arts[2]).tocsr().astype(np.float32)


def make_adapter(cfg: RunConfig) -> Any:
    """The configured adapter, built with ``[trainer] options`` as keyword arguments."""
    return adapter_factory(cfg)(**cfg.trainer.options)


def adapter_factory(cfg: RunConfig) -> Any:
    """The configured adapter's factory, checked to take ``[trainer] options`` as keyword arguments."""
    factory = plugins.lookup(plugins.adapters(), cfg.trainer.adapter, "adapter", "trainer.adapter").factory
    opts = cfg.trainer.options
    try:
        inspect.signature(getattr(factory, "resolve", lambda: factory)()).bind(**opts)
    except TypeError as exc:
        raise ConfigError(
            f"adapter {cfg.trainer.adapter!r} does not take options {sorted(opts)}: {exc}",
            where="[trainer] options",
            fix="remove them or check the adapter's documentation",
        ) from None
    except ValueError:  # no signature to check (a C callable): let the call decide
        pass
    return factory


@dataclass
class ArmContext:
    """What adapters that take ``context`` get beside features and targets (upstream trainers need
    texts, the original binary labels for propensity, and the hard support of the augmented matrix)."""

    run_root: Path
    arm: str
    dataset: Dataset
    trn_texts: list[str]
    support: sp.csr_matrix


def preflight(cfg: RunConfig) -> Any:
    """Build the adapter and check its upstream (contract, version) before any stage runs."""
    adapter = make_adapter(cfg)
    if cfg.trainer.finetune and not getattr(adapter, "supports_finetune", False):
        raise ConfigError(
            f"adapter {cfg.trainer.adapter!r} cannot fine-tune the encoder (trainer.finetune = true)",
            where="[trainer] finetune",
            fix='set finetune = false, or use adapter = "builtin"',
        )
    if cfg.trainer.solver == "lbfgs":
        from lever_plugins.trainer.lbfgs import check_config

        check_config(cfg.trainer, finetune=cfg.trainer.finetune)
    if hasattr(adapter, "preflight"):
        adapter.preflight(cfg.trainer.upstream)
    return adapter


def train_stage(
    run: Run,
    arm: str,
    x_train: np.ndarray,
    targets: sp.csr_matrix,
    x_test: np.ndarray,
    cfg: RunConfig,
    upstream_key: str,
    log: Any = None,
    texts: tuple[list[str], list[str]] | None = None,
    context: ArmContext | None = None,
    x_sparse: tuple[sp.csr_matrix, sp.csr_matrix] | None = None,
) -> tuple[sp.csr_matrix, dict]:
    """Train one arm through the configured adapter. Adapters whose ``train_predict`` takes ``texts``
    also get the (train rows, test rows) texts, for trainers that build their own features, and
    those that take ``context`` an :class:`ArmContext`; those that take ``encoder``/``encoder_dir`` (the
    builtin one: ``finetune``) the ``[encoder]`` settings and ``<arm>/encoder``, its fine-tuned encoder."""
    key = cfgmod.config_hash(upstream_key, cfgmod.trainer_key(cfg.trainer), cfg.encoder, cfg.seed, arm)
    art = f"{arm}/scores.npz"
    arts = [art] + ([f"{arm}/encoder/config.json", f"{arm}/encoder/model.safetensors"] if cfg.trainer.finetune else [])

    def compute() -> dict:
        adapter = make_adapter(cfg)
        params = inspect.signature(adapter.train_predict).parameters
        extra: dict[str, Any] = {"texts": texts} if "texts" in params else {}
        if "context" in params:
            extra["context"] = context
        if "encoder" in params:
            extra["encoder"] = cfg.encoder
        if "encoder_dir" in params:
            extra["encoder_dir"] = run.root / arm / "encoder"
        if x_sparse is not None:
            if "x_sparse" not in params:
                raise ConfigError(
                    f"adapter {cfg.trainer.adapter!r} takes no sparse features",
                    where="[encoder] tfidf",
                    fix="set tfidf = false for this adapter",
                )
            extra["x_sparse"] = x_sparse
        scores, stats = adapter.train_predict(x_train, targets, x_test, cfg.trainer, seed=cfg.seed, **extra)
        _save_csr(run.root / art, scores)
        return stats

    stats = cached_stage(run, f"train_{arm}", key, arts, compute, log)
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
    targets = soft_stage(run, ds, cfg, temb, tkey, log)
    n = ds.y_trn.shape[0]
    x = feats["trn"]
    if targets.shape[0] > n:
        x = np.vstack([x, feats["lbl"][: targets.shape[0] - n]])
    return x, targets, cfgmod.config_hash(tkey, cfg.soft_labels)


def arm_texts(ds: Dataset, rows: int) -> tuple[list[str], list[str]]:
    """Texts of an arm's training rows (documents, then label texts for the N + L rows) and test rows."""
    n = len(ds.trn_texts)
    return ds.trn_texts + ds.lbl_texts[: rows - n], ds.tst_texts


def arm_context(run: Run, ds: Dataset, arm: str, rows: int) -> ArmContext:
    support = ds.binary_train() if arm == "base" else sp.load_npz(run.root / "soft/y_aug.npz").tocsr()
    return ArmContext(run.root, arm, ds, arm_texts(ds, rows)[0], support)
