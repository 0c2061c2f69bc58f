"""``lever wrap elias``: ELIAS stage 1 (``net: elias-1``) trained on the arm's targets, then ELIAS's ``eval.py``.

Launch design. ELIAS's scripts resolve ``configs/``, ``Datasets/<ds>/`` and ``Results/<project>/<ds>/<exp>/``
against the current directory, and ``resources.load_yaml`` resolves a relative ``__dependency__`` against it
too (absolute ones are kept). So the arm's workdir (``OUT/<arm>/upstream``) is ELIAS's working directory:

- ``configs/``: a copy of the checkout's ``configs/`` (``train.py`` opens ``configs/logging.yaml`` by that
  relative path, and per-data-set YAMLs depend on ``configs/elias.yaml`` relatively) plus the generated
  ``configs/lever-elias.yaml``: ``__dependency__`` = ``options.config`` (default ``configs/elias.yaml``),
  then the adapter's keys (data manager, loss, encoder, cluster file, validation size) and the user's
  ``[trainer] options.elias`` overrides;
- ``Datasets/<ds>/``: the files of :mod:`lever_elias.data`;
- ``cmat.npz``: the initial cluster–label matrix (``A_init_path``), see :func:`lever_elias.data.cluster_matrix`.

Then ``train.py configs/lever-elias.yaml [upstream args]`` runs in-process (runpy, the patches of
:mod:`lever_elias.patches` active), keeps the best model on the validation rows (original documents only)
as ``model.pt``, and ``eval.py Results/.../config.yaml`` scores the test set with it into
``tst_score_mat.npz`` (top ``eval_topk`` per row, test filter pairs removed), which :meth:`collect` reads.
Test data never selects the model: validation is never the test set here (``num_val_points`` > 0).
Nothing is written into the checkout.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_elias import data as D
from lever_elias.patches import DATA_MANAGER, LOSS, make_patches
from lever_plugins.errors import ConfigError, UpstreamError
from lever_plugins.runs import check_inside
from lever_plugins.wrap import Arm, LaunchSpec, Patch, Symbol, WrapAdapter
from lever_plugins.wrap.launch import check_processes

PROJECT = "LEVER"

# sha256 (lever_plugins.wrap.contract.file_digest) of the files this adapter depends on, at the tested commit.
TESTED = {
    "724b5fefd519eafef82465b9be7c9da5fe8d6e4e": {
        "train.py": "4d50ecb364911146bc4b39a3f79a5c6dcd94dffdbe4d1ca3d4f2af7469cffa15",
        "eval.py": "57a89138d37a373d3a1b548784e58fdb53e369a8a7844289d8754ec6dbce5b98",
        "datasets.py": "ca98a482678ecb40cdbb9b865cb74f4870c756425f9ebab3a9f2cbfa426c1bee",
        "losses.py": "9ee0b40f3709baf97193b693aaf8f093c4d4f0c8faae69b364e6e59d51277d88",
        "nets.py": "0ead898064f410197ca0afda20179a9a44cbbfd35a0486da0256fb348d9abf52",
        "resources.py": "cd711460c4a9a2c299769a2d740da3fad026e1265a42ceb9423fb0d0068971ff",
        "dl_helper.py": "3f0c4346a7f62dbd1d3610a4d062e38535763dcc0271670c7e68e7fc78cdb9db",
        "optimizer_bundles.py": "3e089603238db6cd9c2568d1dfcd01121d46fc94483d4d6d1cfb25181da780c6",
        "configs/base.yaml": "760908f491996404f576f224d94aedd8f70b410ad8c9a7c4de63cb6aaefff2c1",
        "configs/elias.yaml": "ae99734093d931c148786286485f249e250c1e0a7488d0ba0d3d5a50283c86a9",
        "configs/logging.yaml": "8d786f2debcee4726009046f2eaf78735fedf0d331ed11013c4c122def4a8b30",
        "create_tokenized_files.py": "f7e70dc09bf71f16a47995d4b6e4d0808ca60687d0f77429f1823b9fd21f1a9f",
    }
}

# Keys the adapter sets: the launch depends on them, so options.elias may not override them.
RESERVED = ("dataset", "project", "expname", "data_manager", "A_init_path", "data_tokenization", "save")


def _yaml_chain(root: Path, path: Path, seen: int = 0) -> dict[str, Any]:
    """The merged keys of an ELIAS YAML and its ``__dependency__`` chain (later keys win; relative
    dependencies are relative to ELIAS's working directory, here the checkout ``root``)."""
    import yaml

    if seen > 20:
        raise ConfigError("ELIAS config __dependency__ chain too deep", where=str(path))
    d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out: dict[str, Any] = {}
    for dep in str(d.get("__dependency__", "")).split(","):
        if dep.strip():
            p = Path(dep.strip())
            out.update(_yaml_chain(root, p if p.is_absolute() else root / p, seen + 1))
    out.update({k: v for k, v in d.items() if k != "__dependency__"})
    return out


def _check_tf(tf: str, where: str) -> None:
    """ELIAS names its token files after ``tf`` (``raw/<split>_X.<tf>_<len>.dat``): a ``tf`` with '..'
    would make the adapter write them outside the run folder."""
    rel = os.path.normpath(f"Datasets/ds/raw/trn_X.{D.token_type(tf)}_1.dat")  # as prepare() builds it
    if rel == ".." or rel.startswith(("../", "/")):
        raise ConfigError(f"encoder {tf!r} would make ELIAS's token files land outside the run folder ({rel})",
                          where=where, fix="give the encoder as an HF name or a path without '..' components")


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _cli_value(args: list[str], key: str) -> str | None:
    """The value of ``--key`` among ELIAS runtime arguments (last one wins), else None."""
    val = None
    for i, a in enumerate(args):
        if a == f"--{key}" and i + 1 < len(args):
            val = args[i + 1]
        elif a.startswith(f"--{key}="):
            val = a.split("=", 1)[1]
    return val


class EliasAdapter(WrapAdapter):
    """ELIAS (https://github.com/nilesh2797/ELIAS) run on LEVER's targets.

    ``[trainer] options`` (all optional): ``config`` (the checkout's YAML the run depends on, default
    ``configs/elias.yaml``), ``tf`` (encoder: HF name in the local cache or a local folder; default
    ``distilbert-base-uncased``), ``tf_max_len`` (32), ``dataset`` (ELIAS's data set name, which picks its
    propensity A/B: names with ``amazon``/``wiki``; default ``lever``), ``num_val_points`` (validation
    documents taken out of training, default min(4000, N/10)), ``elias`` (a table of further ELIAS YAML keys,
    e.g. ``{num_epochs = 5, bsz = 256, max_leaf = 32}``), ``processes`` (K > 1: ``train.py`` runs under
    ``accelerate launch`` with K processes, NCCL on GPUs or gloo on the CPU, the patches active in every
    rank; see :mod:`lever_elias.multiproc`). Arguments after ``--`` go to ``train.py``.
    """

    name = "elias"
    upstream = "https://github.com/nilesh2797/ELIAS"
    tested = TESTED
    takes_loss_hook = True  # a plugin's lever_loss is ELIASLoss's classification term (lever_elias.patches)
    needs_features = False

    def __init__(
        self,
        config: str = "configs/elias.yaml",
        tf: str = "distilbert-base-uncased",
        tf_max_len: int = 32,
        dataset: str = "lever",
        num_val_points: int | None = None,
        elias: dict[str, Any] | None = None,
        processes: int = 1,
    ):
        super().__init__(
            config=config, tf=tf, tf_max_len=tf_max_len, dataset=dataset, num_val_points=num_val_points, elias=elias,
            processes=processes,
        )
        self.processes = check_processes(processes)
        bad = sorted(set(elias or {}) & set(RESERVED))
        if bad:
            raise ConfigError(
                f"[trainer] options.elias may not set {', '.join(bad)} (the adapter sets them)",
                where="[trainer] options.elias",
                fix="remove those keys; use options.dataset for the data set name",
            )
        if not dataset or "/" in dataset or dataset.startswith("."):
            raise ConfigError(
                f"bad ELIAS dataset name {dataset!r}", where="[trainer] options.dataset", fix="a plain name"
            )
        self.config, self.tf, self.tf_max_len, self.dataset = config, tf, int(tf_max_len), dataset
        self.num_val_points = num_val_points
        self.elias = dict(elias or {})
        _check_tf(tf, "[trainer] options.tf")

    def check_upstream_args(self, args: list[str]) -> None:
        """The ``-- upstream args`` checked before any stage runs (and before the run folder exists)."""
        for key in RESERVED:
            if _cli_value(args, key) is not None:
                raise ConfigError(
                    f"ELIAS argument --{key} is set by the adapter", where="lever wrap elias -- ...", fix="drop it"
                )
        tf = _cli_value(args, "tf")
        if tf is not None:
            _check_tf(tf, "lever wrap elias -- --tf")

    # -- contract -------------------------------------------------------------------------------
    def contract(self) -> list[Symbol]:
        return [
            Symbol("train", "", why="entry point: module-level script, run in-process (runpy) from the arm's workdir"),
            Symbol("eval", "", why="scores the test set with the best model.pt into tst_score_mat.npz"),
            Symbol(
                "resources", "load_config_and_runtime_args", ("argv", "**extra_args"),
                why="YAML chain via __dependency__ (relative to the working directory) + --key runtime flags",
            ),
            Symbol(
                "resources", "get_inv_prop", ("X_Y", "dataset_name"),
                why="propensity; patched as datasets.get_inv_prop (bound there) to use the original matrix",
            ),
            Symbol("resources", "load_filter_mat", ("fname", "shape"), why="reads filter_labels_test.txt pairs"),
            Symbol("dl_helper", "csr_to_pad_tensor", ("spmat", "pad"), why="pads b['y_hard'] like b['y']"),
            Symbol("datasets", "DATA_MANAGERS", why=f"registry: {DATA_MANAGER!r} added in place"),
            Symbol("datasets", "XMCDataManager.__init__", ("self", "args"), why="subclassed: val rows from documents"),
            Symbol(
                "datasets", "XMCDataManager.build_datasets", ("self",),
                why="subclassed: val labels = original binary rows; train dataset gets the hard support",
            ),
            Symbol("datasets", "XMCCollator.__call__", ("self", "batch"), why="patched: adds b['y_hard']"),
            Symbol("losses", "LOSSES", why=f"registry: {LOSS!r} added in place"),
            Symbol("losses", "ELIASLoss.__init__", ("self", "args", "reduction"), why="subclassed by the LEVER loss"),
            Symbol(
                "losses", "ELIASLoss.forward", ("self", "model", "b"),
                why="classification term on the blended values (called with loss_lambda 0)",
            ),
            Symbol("nets", "ELIAS1.forward", ("self", "b"), why="training output: topK vals/inds, shortlist vals/inds"),
            Symbol(
                "nets", "ELIAS1.get_cluster_shortlist", ("self", "cluster_scores", "b"),
                why="patched: teacher forcing from hard labels only",
            ),
        ]  # fmt: skip

    # -- files ----------------------------------------------------------------------------------
    def settings(self, ctx: Arm) -> dict[str, Any]:
        """The ELIAS keys of this arm: checkout config chain < adapter keys < options.elias < ``--key`` args."""
        base = ctx.upstream / self.config
        if not base.is_file():
            raise ConfigError(
                f"ELIAS config {self.config} not found in the checkout",
                where=str(base),
                fix="set [trainer] options.config to a YAML of the checkout (e.g. configs/elias.yaml)",
            )
        n_docs = ctx.n_docs
        n_val = self.num_val_points if self.num_val_points is not None else min(4000, max(1, n_docs // 10))
        ours = {
            "project": PROJECT,
            "expname": ctx.name,
            "dataset": self.dataset,
            "net": "elias-1",
            "loss": LOSS if ctx.lever else "elias-loss",
            "data_manager": DATA_MANAGER,
            "data_tokenization": "offline",
            "tf": self.tf,
            "tf_max_len": self.tf_max_len,
            "num_val_points": int(n_val),
            "save": True,
            "eval_topk": max(100, int(ctx.top_k)),
        }
        merged = {**_yaml_chain(ctx.upstream, base), **ours, **self.elias}
        for key in ("max_leaf", "beam_size", "tf", "tf_max_len", "num_val_points"):
            v = _cli_value(ctx.upstream_args, key)
            if v is not None:
                merged[key] = type(merged[key])(v) if key in merged and merged[key] is not None else v
        for key in RESERVED:
            if _cli_value(ctx.upstream_args, key) is not None:
                raise ConfigError(
                    f"ELIAS argument --{key} is set by the adapter", where="lever wrap elias -- ...", fix="drop it"
                )
        if not 0 < int(merged["num_val_points"]) < n_docs:
            raise ConfigError(
                f"num_val_points {merged['num_val_points']} must be in [1, {n_docs - 1}] (ELIAS would otherwise "
                "validate, and pick its model, on the test set)",
                where="[trainer] options.num_val_points",
                fix="choose a smaller validation slice",
            )
        n_labels = ctx.y_train.shape[1]
        c = D.num_clusters(n_labels, int(merged["max_leaf"])) if n_labels > 0 else 0
        if c < int(merged["beam_size"]):
            raise ConfigError(
                f"ELIAS has {c} clusters ({n_labels} labels / max_leaf {merged['max_leaf']}), fewer than its "
                f"beam_size {merged['beam_size']}",
                where="[trainer] options.elias",
                fix=f"set options.elias.max_leaf <= {max(1, n_labels // int(merged['beam_size']))} "
                "or a smaller beam_size",
            )
        # ELIAS's predict takes the top eval_topk of beam_size × (largest cluster) candidates, and train.py
        # logs R@100, which exists only for eval_topk >= 100.
        width = int(merged["beam_size"]) * int(np.ceil(n_labels / c))
        if width < int(merged["eval_topk"]):
            raise ConfigError(
                f"ELIAS predicts its top eval_topk={merged['eval_topk']} from beam_size × labels per cluster = "
                f"{merged['beam_size']} × {int(np.ceil(n_labels / c))} = {width} candidates",
                where="[trainer] options.elias",
                fix="raise beam_size or max_leaf (ELIAS needs eval_topk >= 100: it logs R@100)",
            )
        return merged

    def prepare(self, ctx: Arm) -> LaunchSpec:
        import yaml
        from transformers import AutoTokenizer

        cfg = self.settings(ctx)
        w = ctx.workdir.resolve()
        ddir = w / "Datasets" / self.dataset
        for stale in (ddir, w / "Results" / PROJECT / self.dataset / ctx.name):
            shutil.rmtree(stale, ignore_errors=True)

        n_docs = ctx.n_docs
        targets = sp.csr_matrix(ctx.targets, dtype=np.float32)
        D.save_npz(ddir / "Y.trn.npz", targets)
        D.save_npz(ddir / "Y.tst.npz", sp.csr_matrix(ctx.y_test, dtype=np.float32))
        D.save_npz(ddir / "lever" / "Y.trn.orig.npz", sp.csr_matrix(ctx.y_train, dtype=np.float32))
        hard = sp.csr_matrix(ctx.support, dtype=np.float32)
        hard.data[:] = 1.0
        if hard.shape != targets.shape:
            raise UpstreamError(f"hard support {hard.shape} does not match the targets {targets.shape}")
        D.save_npz(ddir / "lever" / "Y.trn.hard.npz", hard)
        D.write_lines(ddir / "raw" / "trn_X.txt", ctx.trn_texts)
        D.write_lines(ddir / "raw" / "tst_X.txt", ctx.tst_texts)
        tf, max_len = str(cfg["tf"]), int(cfg["tf_max_len"])
        try:
            tok = AutoTokenizer.from_pretrained(D.token_type(tf), do_lower_case=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load ELIAS's tokenizer {D.token_type(tf)!r} for encoder {tf!r}: {str(exc).splitlines()[0]}",
                where="[trainer] options.tf",
                fix="use an encoder in the local HF cache, or a local folder (whose path has no 'bert'/'roberta', "
                "since ELIAS then loads bert-base-uncased/roberta-base as tokenizer)",
            ) from None
        for split, texts in (("trn", ctx.trn_texts), ("tst", ctx.tst_texts)):
            dest = check_inside(w, D.token_file(ddir, split, tf, max_len), where="[trainer] options.tf")
            D.write_tokens(dest, texts, tok, max_len)
        x_trn, x_tst = D.bow(ctx.trn_texts, ctx.tst_texts)
        D.save_npz(ddir / "X.trn.npz", x_trn)
        D.save_npz(ddir / "X.tst.npz", x_tst)
        if len(ctx.tst_filter):
            D.write_filter(ddir / "filter_labels_test.txt", ctx.tst_filter)
        n_val = int(cfg["num_val_points"])
        np.save(ddir / f"val_inds_{n_val}.npy", D.val_rows(n_docs, n_val, ctx.seed))

        cmat = w / "cmat.npz"
        D.save_npz(cmat, D.cluster_matrix(hard, x_trn, int(cfg["max_leaf"]), ctx.seed))

        # ELIAS resolves configs/ (logging.yaml, relative __dependency__ chains) against its working directory:
        # the checkout's YAMLs are copied beside the generated one, so the chain resolves as in the checkout.
        conf = w / "configs"
        shutil.rmtree(conf, ignore_errors=True)
        shutil.copytree(ctx.upstream / "configs", conf, ignore=shutil.ignore_patterns(".*"))
        keys = {k: cfg[k] for k in ("project", "expname", "dataset", "net", "loss", "data_manager", "data_tokenization",
                                     "tf", "tf_max_len", "num_val_points", "save", "eval_topk")}  # fmt: skip
        doc = {
            "__dependency__": self.config,
            **keys,
            "A_init_path": str(cmat),
            **self.elias,
        }
        from lever_plugins.runs import atomic_write

        with atomic_write(conf / "lever-elias.yaml", "w", encoding="utf-8") as fh:
            fh.write("# Generated by lever-elias for one arm; depends on the checkout's config.\n")
            yaml.safe_dump(doc, fh, sort_keys=False)

        payload = {
            "lever": ctx.lever,
            "n_docs": n_docs,
            "seed": ctx.seed,
            "upstream": str(ctx.upstream),
            "y_orig": str(ddir / "lever" / "Y.trn.orig.npz"),
            "y_hard": str(ddir / "lever" / "Y.trn.hard.npz") if ctx.lever else None,
            "processes": self.processes,
        }
        env = {
            "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled"),  # ELIAS always calls wandb.init
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPYCACHEPREFIX": str(w / "pycache"),  # bytecode of ELIAS's modules, not in the checkout
        }
        if self.processes > 1 and not _cuda():
            env["ACCELERATE_USE_CPU"] = "1"  # accelerate's multi-CPU mode: gloo
        out_dir = f"Results/{PROJECT}/{self.dataset}/{ctx.name}"
        return LaunchSpec(
            script="train.py",
            argv=["configs/lever-elias.yaml"],
            payload=payload,
            cwd=w,
            env=env,
            processes=self.processes,
            launcher="accelerate",
            info={"launcher": "accelerate launch" if self.processes > 1 else "python"},
            then=[
                LaunchSpec(
                    script="eval.py", argv=[f"{out_dir}/config.yaml"], payload=payload, cwd=w, env=env, name="eval"
                )
            ],  # fmt: skip
        )

    # -- in the ELIAS processes ----------------------------------------------------------------
    def patches(self, payload: dict[str, Any]) -> list[Patch]:
        import importlib.util

        from lever_elias import multiproc
        from lever_elias.patches import ensure_turtle, unshadow_datasets
        from lever_plugins.wrap import probe

        # Process-level shims before ELIAS's modules load (this runs at interpreter start-up, see wrap.boot).
        ensure_turtle()
        if payload.get("upstream"):
            unshadow_datasets(payload["upstream"])
        out = make_patches(payload, self.plugin_loss())
        if int(payload.get("processes") or 1) > 1 and importlib.util.find_spec("accelerate") is not None:
            out.append(Patch("accelerate:Accelerator.__init__", multiproc.ddp_find_unused))
        if probe.enabled():
            out.append(Patch("losses:ELIASLoss.__init__", multiproc.probe_criterion))
        return out

    # -- scores back ---------------------------------------------------------------------------
    def collect(self, ctx: Arm, spec: LaunchSpec) -> sp.csr_matrix:
        path = ctx.workdir / "Results" / PROJECT / self.dataset / ctx.name / "tst_score_mat.npz"
        if not path.is_file():
            raise UpstreamError(
                "ELIAS wrote no test score matrix",
                where=str(path),
                fix=f"read {ctx.workdir / 'upstream.log'} and {ctx.workdir / 'eval.log'}",
            )
        scores = sp.load_npz(path).tocsr()
        n_labels = ctx.y_train.shape[1]
        if scores.shape[1] == n_labels + 1:  # a padding column, if a future ELIAS keeps it
            scores = scores[:, :n_labels]
        scores.eliminate_zeros()
        return scores.astype(np.float32)
