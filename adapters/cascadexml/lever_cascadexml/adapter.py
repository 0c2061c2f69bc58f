"""``lever wrap cascadexml``: CascadeXML's own ``src/main.py`` on an arm's data, LEVER patched in.

prepare() writes, under ``<workdir>/data/lever/`` (``main.py`` reads ``./data/<--dataset>/``, cwd = workdir):

- ``bert-base/{train,test}_encoded.pkl`` — pickled token-id lists without special tokens (the upstream
  adds [CLS]=101/[SEP]=102 itself), one per train row (N documents, then L label texts for +LEVER);
- ``Y.trn.npz`` — the hard support (binary; ground truth, plus the label rows' own label for +LEVER);
  ``Y.tst.npz`` — the test labels; ``lever_targets.npz`` (+LEVER) — the blended soft targets, same rows;
- ``inv_prop.npy`` — from the ORIGINAL train labels (the upstream would compute it from Y.trn.npz and
  raise KeyError for a dataset name outside its A/B table); it only feeds the upstream's printed PSP;
- ``tfidf.npz`` — TF-IDF of the train rows (the upstream's train set normalises it);
- ``lever_clusters.pkl`` + ``graph.npz`` — the label tree (:mod:`lever_cascadexml.tree`) and an identity
  label graph (read only to build a tree, which is given), so no random walk or re-clustering runs.

No ``filter_labels_test.txt`` is written: the upstream's filtering calls ``.cuda()`` and lever filters
at evaluation anyway. collect() reads the last epoch's ``lever_bert-base_<seed>_preds.npz`` (top-20 leaf
scores per test row, the upstream's format), not the checkpoint it selects on the test set.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.errors import ConfigError, UpstreamError
from lever_plugins.runs import atomic_write
from lever_plugins.wrap import Arm, LaunchSpec, Patch, Symbol, WrapAdapter
from lever_plugins.wrap.launch import check_processes

DATASET = "lever"
BERT = "bert-base"  # --bert: the folder name the upstream reads; the weights come from `encoder`
CLUSTERS = "lever_clusters.pkl"
CLS_ID, SEP_ID = 101, 102  # hard-coded in the upstream's dataset (BERT uncased vocabulary)

# sha256 (contract.file_digest) of the upstream files the adapter relies on, at the tested commit.
TESTED = {
    "ce701f688aaf5d5c8abe979d192f9c8f224aec90": {
        "src/main.py": "59e0bf9a339ebe9cee18781b722a22fbaf706130f2725ff00470a407e67f61b0",
        "src/CascadeXML.py": "8cd81c7c9e3448e262e5f347c862f49c71b158c2d0ab85121fb3c305f4ba5e17",
        "src/dataset.py": "66134bd19192b46021dd2d4462de554727717e842b17bea9279b83b12235a508",
        "src/data_utils.py": "8266830df6faf41161a688013488d94904dccebd670da5280be59fea352ceb4b",
        "src/Runner.py": "bd1337d7b61d7b105cb07e82b6613d73042d6191a3e0219a4f8bf013d8a54020",
        "src/tree.py": "597600d9d7c77c9ed3ffb9f213614e0669143507245a09e01bb463d58206f66e",
        "src/training_schedule.py": "bc44f97b62e8d3dfcf2b810b872b3fd04f3b37ae5e5e4907d342fbfc6fd8bc80",
    }
}


def _src(module: str) -> str:
    return f"src/{module}.py"


class CascadeXMLAdapter(WrapAdapter):
    """CascadeXML (xmc-aalto/cascadexml) through its own entry point. Options (``[trainer] options``):
    ``encoder`` (local folder or cached hub id of a BERT-vocabulary encoder with >= 12 layers),
    ``tree_depth`` / ``topk`` (log2 cluster counts per depth and shortlist sizes; 2 or 3 each; defaults
    from the label count), ``epochs``, ``batch_size``, ``max_len``, ``lr``, ``warmup`` (passed as the
    upstream flags; unset = the upstream's defaults), ``processes`` (K > 1: the upstream's DDP path,
    ``main.py --distributed`` under torchrun with K ranks, NCCL on GPUs or gloo on the CPU, the patches
    active in every rank; see :mod:`lever_cascadexml.multiproc`). Arguments after ``--`` go to
    ``main.py`` last."""

    name = "cascadexml"
    upstream = "https://github.com/xmc-aalto/cascadexml"
    tested = TESTED
    takes_loss_hook = True  # a plugin's lever_loss is every level's term (lever_cascadexml.shims.LevelLoss)

    def __init__(
        self,
        encoder: str = "bert-base-uncased",
        tree_depth: list[int] | None = None,
        topk: list[int] | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        max_len: int | None = None,
        lr: float | None = None,
        warmup: int | None = None,
        processes: int = 1,
    ):
        opts = dict(encoder=encoder, tree_depth=tree_depth, topk=topk, epochs=epochs, batch_size=batch_size,
                    max_len=max_len, lr=lr, warmup=warmup, processes=processes)  # fmt: skip
        super().__init__(**{k: v for k, v in opts.items() if v is not None})
        self.processes = check_processes(processes)
        self.encoder = encoder
        self.tree_depth, self.topk = tree_depth, topk
        self.flags = {"num_epochs": epochs, "batch_size": batch_size, "max_len": max_len, "lr": lr, "warmup": warmup}

    # -- contract ---------------------------------------------------------------------------------
    def contract(self) -> list[Symbol]:
        def s(module: str, qualname: str, params: tuple[str, ...] | None, why: str) -> Symbol:
            return Symbol(module, qualname, params, why, file=_src(module))

        return [
            s("main", "main", ("params",), "the entry point, launched as __main__ with the adapter's flags"),
            s("main", "multi_collate", ("batch",), "items 3+ become per-level lists: carries soft ids/values"),
            s("data_utils", "load_data", ("dataset", "model", "num_labels", "LF_data"), "reads prepare()'s files"),
            s("dataset", "MultiXMLGeneral.__init__", ("self", "x", "Y", "params", "X_tfidf", "mode"),
              "wrapped: the train set also holds the blended targets"),
            s("dataset", "MultiXMLGeneral.__getitem__", ("self", "idx"),
              "replaced: soft leaf targets, hard+soft coarse support, rows with no labels"),
            s("dataset", "MultiXMLGeneral.build", ("self", "params", "lbl_dense", "word_embeds"),
              "loads the adapter's label tree (--cluster_name)"),
            s("dataset", "MultiXMLGeneral.load_graph", ("self", "params", "word_embeds"), "reads graph.npz"),
            s("tree", "build_tree.load", ("self", "fname"), "assigns the pickled __dict__ the adapter writes"),
            s("tree", "build_tree._get_cluster_depth", ("self", "depth"), "reads hash_map_array[d].clusters"),
            s("CascadeXML", "get_bert", ("bert_name",), "replaced: loads the configured encoder"),
            s("CascadeXML", "CascadeXML.__init__", ("self", "params", "train_ds", "device"), "CPU shim: device"),
            s("CascadeXML", "CascadeXML.forward",
              ("self", "input_ids", "attention_mask", "epoch", "all_labels", "return_out"),
              "wrapped: soft BCE on the leaf logits (+LEVER)"),
            s("Runner", "Runner.train", ("self", "model", "params", "device"), "CPU shim: device"),
            s("Runner", "Runner.fit_one_epoch", ("self", "model", "params", "device", "epoch"),
              "calls model(x, mask, epoch, labels): the patched forward"),
            s("Runner", "Runner.test", ("self", "model", "params", "device", "epoch"),
              "CPU shim (.cuda()); writes the predictions collect() reads"),
            s("training_schedule", "ThreePhaseOneCycleLR.__init__", None,
              "passes verbose to torch's _LRScheduler (shimmed)"),
        ]  # fmt: skip

    # -- prepare ----------------------------------------------------------------------------------
    def shape(self, num_labels: int) -> tuple[list[int], list[int]]:
        from lever_cascadexml.tree import check_shape, default_shape

        if (self.tree_depth is None) != (self.topk is None):
            raise ConfigError(
                "set both tree_depth and topk, or neither",
                where="[trainer] options",
                fix="e.g. options = { tree_depth = [3, 6], topk = [8, 32] }",
            )
        if self.tree_depth is None:
            depth, topk = default_shape(num_labels)
        else:
            depth, topk = [int(b) for b in self.tree_depth], [int(k) for k in self.topk or []]
        check_shape(num_labels, depth, topk)
        return depth, topk

    def _tokenizer(self) -> Any:
        from transformers import AutoConfig, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(self.encoder)
            cfg = AutoConfig.from_pretrained(self.encoder)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load encoder {self.encoder!r}: {str(exc).splitlines()[0]}",
                where="[trainer] options encoder",
                fix="give a local model folder or a hub id already in the HF cache (runs are offline)",
            ) from None
        if (tok.cls_token_id, tok.sep_token_id) != (CLS_ID, SEP_ID):
            raise ConfigError(
                f"encoder {self.encoder!r} has [CLS]/[SEP] ids {tok.cls_token_id}/{tok.sep_token_id}; "
                f"CascadeXML hard-codes {CLS_ID}/{SEP_ID}",
                where="[trainer] options encoder",
                fix="use an encoder with the BERT uncased vocabulary (bert-base-uncased and its relatives)",
            )
        if getattr(cfg, "num_hidden_layers", 0) < 12:
            raise ConfigError(
                f"encoder {self.encoder!r} has {getattr(cfg, 'num_hidden_layers', 0)} layers; "
                "CascadeXML reads hidden states 5 to 12",
                where="[trainer] options encoder",
                fix="use an encoder with at least 12 layers",
            )
        return tok

    def prepare(self, ctx: Arm) -> LaunchSpec:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.preprocessing import normalize

        from lever_cascadexml.tree import build_tree, write_tree
        from lever_plugins.metrics.propensity import binarise, inv_propensity

        num_labels = ctx.y_train.shape[1]
        rows = ctx.targets.shape[0]
        if ctx.support.shape != ctx.targets.shape or len(ctx.trn_texts) != rows:
            raise UpstreamError(
                f"cascadexml: targets {ctx.targets.shape}, support {ctx.support.shape} and "
                f"{len(ctx.trn_texts)} train texts disagree",
                where=str(ctx.workdir),
                fix="a bug in the arm's inputs; rerun with a fresh --out",
            )
        depth, topk = self.shape(num_labels)
        tok = self._tokenizer()
        max_len = int(self.flags["max_len"] or 128)

        data = ctx.workdir / "data" / DATASET
        if data.exists():  # the upstream reuses whatever it finds (inv_prop, clusters, encodings)
            shutil.rmtree(data)
        (data / BERT).mkdir(parents=True)

        def encode(texts: list[str]) -> list[list[int]]:
            enc = tok(list(texts), add_special_tokens=False, truncation=True, max_length=max_len - 2)
            return [list(map(int, ids)) for ids in enc["input_ids"]]

        for name, texts in (("train", ctx.trn_texts), ("test", ctx.tst_texts)):
            with atomic_write(data / BERT / f"{name}_encoded.pkl", "wb") as fh:
                pickle.dump(encode(texts), fh, protocol=4)

        support = binarise(ctx.support, where="support").astype(np.float32)
        _save(data / "Y.trn.npz", support)
        _save(data / "Y.tst.npz", binarise(ctx.y_test, where="test labels").astype(np.float32))
        if ctx.lever:
            _save(data / "lever_targets.npz", sp.csr_matrix(ctx.targets, dtype=np.float32))
        y_orig = binarise(ctx.y_train, where="train labels")
        with atomic_write(data / "inv_prop.npy", "wb") as fh:
            np.save(fh, inv_propensity(y_orig, 0.55, 1.5))

        vec = TfidfVectorizer(sublinear_tf=True, max_features=1 << 16, dtype=np.float32)
        vec.fit(list(ctx.trn_texts[: ctx.n_docs]) + list(ctx.lbl_texts))
        _save(data / "tfidf.npz", vec.transform(ctx.trn_texts).tocsr())
        # Tree features: label text + centroid of the label's original training documents (same for both arms).
        docs = normalize(y_orig.T @ vec.transform(ctx.trn_texts[: ctx.n_docs]))
        feats = normalize(docs + normalize(vec.transform(ctx.lbl_texts)))
        if feats.shape[1] > 256:
            from sklearn.decomposition import TruncatedSVD

            svd = TruncatedSVD(min(64, feats.shape[1] - 1, num_labels - 1), random_state=ctx.seed)
            dense = svd.fit_transform(feats)
        else:
            dense = feats.toarray()
        write_tree(data / CLUSTERS, build_tree(dense, depth, ctx.seed), depth, num_labels)
        _save(data / "graph.npz", sp.identity(num_labels, dtype=np.float32, format="csr"))

        argv = [
            "--dataset", DATASET, "--bert", BERT, "--num_labels", str(num_labels), "--seed", str(ctx.seed),
            "--cluster_name", CLUSTERS, "--tree_depth", *map(str, depth), "--topk", *map(str, topk),
            "--max_len", str(max_len),
        ]  # fmt: skip
        for flag, value in self.flags.items():
            if value is not None and flag != "max_len":
                argv += [f"--{flag}", str(value)]
        if self.processes > 1:
            argv += ["--distributed"]
        return LaunchSpec(
            script="src/main.py",
            argv=argv,
            payload={
                "encoder": self.encoder,
                "soft": str((data / "lever_targets.npz").resolve()) if ctx.lever else None,
            },
            env={"TOKENIZERS_PARALLELISM": "false"},
            processes=self.processes,
            launcher="torchrun",
            info={"launcher": "torchrun" if self.processes > 1 else "python"},
        )

    # -- patches ----------------------------------------------------------------------------------
    def patches(self, payload: dict[str, Any]) -> list[Patch]:
        from lever_cascadexml import shims

        out = [
            *shims.adamw_patches(),
            Patch("torch.optim.lr_scheduler:_LRScheduler.__init__", shims.scheduler_init),
            Patch("CascadeXML:get_bert", shims.encoder_loader(payload["encoder"])),
            Patch("CascadeXML:CascadeXML.__init__", shims.cpu_device_arg(2)),
            Patch("CascadeXML:CascadeXML.to", shims.cpu_device_arg(0)),
            Patch("Runner:Runner.train", shims.cpu_device_arg(2)),
            Patch("Runner:Runner.test", shims.cpu_test),
            Patch("dataset:MultiXMLGeneral.__init__", shims.dataset_init(payload.get("soft"))),
            Patch("dataset:MultiXMLGeneral.__getitem__", shims.dataset_getitem),
        ]
        loss = self.plugin_loss()
        if payload.get("soft") or loss is not None:
            out.append(Patch("CascadeXML:CascadeXML.forward", shims.level_forward(loss)))
        out += self._multiproc_patches()
        return out

    def _multiproc_patches(self) -> list[Patch]:
        """CPU shims of the DDP path (no-ops with CUDA) and, with LEVER_PROBE_DIR, the loss probes."""
        from lever_cascadexml import multiproc, shims
        from lever_plugins.wrap import probe

        out = []
        if self.processes > 1:
            out += [
                Patch("torch.distributed:init_process_group", multiproc.gloo_without_cuda),
                Patch("torch.cuda:set_device", multiproc.set_device_without_cuda),
                Patch("torch.nn.parallel:DistributedDataParallel.__init__", multiproc.ddp_without_cuda),
                Patch("Runner:Runner.fit_one_epoch", shims.cpu_device_arg(2)),
            ]
        if probe.enabled():
            out += [
                Patch("CascadeXML:CascadeXML.__init__", multiproc.probe_loss_fn),
                Patch("lever_cascadexml.shims:soft_target", multiproc.probe_soft_target),
            ]
        return out

    # -- collect ----------------------------------------------------------------------------------
    def collect(self, ctx: Arm, spec: LaunchSpec) -> sp.csr_matrix:
        path = (spec.cwd or ctx.workdir) / f"{DATASET}_{BERT}_{ctx.seed}_preds.npz"
        if not path.is_file():
            raise UpstreamError(
                "cascadexml wrote no test predictions",
                where=str(path),
                fix="read upstream.log in the same folder; Runner.test writes this file after every epoch",
            )
        scores = sp.load_npz(path).tocsr()
        n_test, num_labels = len(ctx.tst_texts), ctx.y_train.shape[1]
        if scores.shape != (n_test, num_labels + 1):
            raise UpstreamError(
                f"cascadexml predictions have shape {scores.shape}, expected {(n_test, num_labels + 1)}",
                where=str(path),
                fix="the upstream's label padding changed; run `lever doctor cascadexml`",
            )
        scores = scores[:, :num_labels].tocsr()
        scores.eliminate_zeros()
        return scores


def _save(path: Path, m: sp.spmatrix) -> None:
    with atomic_write(path, "wb") as fh:
        sp.save_npz(fh, sp.csr_matrix(m))
