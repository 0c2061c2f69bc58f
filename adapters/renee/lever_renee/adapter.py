"""The ``renee`` adapter: Renée (microsoft/renee) trained end to end on LEVER's soft targets.

``lever wrap renee --upstream PATH -- <main.py flags>`` writes the arm's data as Renée reads it
(see :mod:`lever_renee.files`), launches ``main.py --data-dir D <flags>`` with the patches of
:mod:`lever_renee.patches` active in it and in its ``torch.multiprocessing.spawn`` children (+LEVER arm
only; the base arm is Renée as shipped), and reads ``<expname>_score_mat.npz`` back.

Renée needs CUDA: ``main.start`` hard-codes ``torch.cuda.set_device``, ``cuda:N`` tensors and NCCL, and
its optimisers come from apex (CUDA-only). On a machine without a GPU the adapter stops before writing
anything (option ``require_cuda = false`` lifts that, for a CPU harness or the test stand-in).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lever_plugins.errors import ConfigError, UpstreamError
from lever_plugins.runs import check_inside
from lever_plugins.wrap import Arm, LaunchSpec, Patch, Symbol, WrapAdapter
from lever_renee import files

TESTED = {
    "7c7c9910422c6ff092183c79cbba11cd8b9d4557": {
        "dl_base.py": "ebe344f197bd175b9dbb96a4f46e52d2ed5292231a8963cef8d7c9055d32b54e",
        "main.py": "a6f5146ea63227c459e30376f1159a520d85b37a8322b505c3f5ebf81d1e1984",
        "utils/CreateTokenizedFiles.py": "93e1283de0cea7d1b74ab48e93b5278800be5f8adc12681b73e7fe6d32986be6",
        "utils/CreateAugData.py": "a89601d5d59f8d998689b5d3fbaa32ab0b38ed8ebc9510977bb6ff84184e094c",
    }
}

# main.py's argparse defaults for the flags the adapter must agree with.
DEFAULTS = {"--tf": "distilbert-base-uncased", "--maxlen": "32", "--expname": "renee-exp"}
DATA_DIR_NAME = "dataset"


def flag_value(args: list[str], flag: str, default: str | None = None) -> str | None:
    """The value argparse would give ``flag`` (``--f v`` or ``--f=v``; the last one wins)."""
    value = default
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


class ReneeAdapter(WrapAdapter):
    """Renée through its own ``main.py``. ``[trainer] options``: ``require_cuda`` (default true)."""

    name = "renee"
    upstream = "https://github.com/microsoft/renee"
    tested = TESTED
    takes_loss_hook = True  # xfc_backward (and --default-impl's default_loss) take a plugin's lever_loss

    def __init__(self, require_cuda: bool = True):
        super().__init__(require_cuda=require_cuda)
        self.require_cuda = bool(require_cuda)

    # -- contract -----------------------------------------------------------------------------------
    def contract(self) -> list[Symbol]:
        return [
            Symbol("main", "main", (), why="the entry point: parses the flags, spawns start() per GPU"),
            Symbol("main", "start", ("device", "ngpus_per_node", "args"), why="reads the data files, propensity"),
            Symbol(
                "dl_base", "XCCollator.__init__",
                ("self", "padded_numy", "dataset", "my_rank", "world_size", "accum", "xfcz", "train", "yfull"),
                why="the patched collator reads self.dataset.labels",
            ),  # fmt: skip
            Symbol("dl_base", "XCCollator.__call__", ("self", "batch"), why="patched: adds batch['zv'] (soft values)"),
            Symbol(
                "dl_base", "BCELossMultiNode.gather_embed", ("self", "embed", "batch_data"),
                why="patched: stashes the batch's soft values for xfc_backward",
            ),  # fmt: skip
            Symbol(
                "dl_base", "BCELossMultiNode.xfc_backward",
                ("self", "embed_out", "out", "pos_x", "pos_y", "grad_input", "use_custom"),
                why="replaced: gradient σ(x) − t instead of σ(x) − 1, loss with Σ t·x",
            ),  # fmt: skip
            Symbol("dl_base", "BCELossMultiNode.xfc_forward", ("self", "embed", "out"), why="called for --custom-cuda"),
            Symbol("dl_base", "LOSS_SAMPLE_FREQ", why="how often xfc_backward computes the loss value"),
            Symbol(
                "dl_base", "GenericModel.__init__",
                ("self", "rank", "args", "numy", "numy_per_gpu", "per_gpu_batch_size", "modules", "device", "name",
                 "out_dir"),
                why="patched with a plugin loss: default_loss (--default-impl) becomes lever_loss",
            ),  # fmt: skip
            Symbol(
                "dl_base", "csr_to_pad_tensor", ("spmat", "pad"),
                why="--default-impl: carries the stored (soft) values into batch['y'], no patch needed",
            ),  # fmt: skip
            Symbol(
                "dl_base", "PreTokBertDataset.__init__",
                ("self", "tokenization_folder", "X_Y", "num_points", "max_len", "doc_type", "iter_mode"),
                why="opens {trn,tst}_doc_*.dat as (num_points, max_len) int64 memmaps",
            ),  # fmt: skip
            Symbol("dl_base", "PreTokBertDataset.get_fts", ("self", "indices", "source"), why="reads the token files"),
            Symbol(
                "dl_base", "PrecEvaluator.__call__", ("self", "loss_model", "epoch", "loss", "out_dir", "name"),
                why="writes <expname>_score_mat.npz, which collect() reads",
            ),  # fmt: skip
        ]

    # -- prepare ------------------------------------------------------------------------------------
    def preflight(self, config: Any) -> None:
        """The contract, then what Renée needs to start at all (before any LEVER stage runs)."""
        super().preflight(config)
        self.check_runtime()

    def check_runtime(self) -> None:
        """pyxclib, and unless ``require_cuda = false`` a CUDA GPU and apex: one clear error if missing."""
        if importlib.util.find_spec("xclib") is None:
            raise UpstreamError(
                "pyxclib (import name xclib) is not installed; Renée imports it",
                where="python environment",
                fix="pip install cython six numba, then pip install --no-build-isolation <pyxclib checkout>",
            )
        if not self.require_cuda:
            return
        import torch

        if not torch.cuda.is_available():
            raise UpstreamError(
                "Renée cannot run on this machine: it needs a CUDA GPU (main.start hard-codes torch.cuda, "
                "cuda:N tensors and NCCL; apex's fused optimisers are CUDA-only)",
                where="torch.cuda.is_available() is False",
                fix="run `lever wrap renee` on a GPU machine with Renée's environment (CUDA torch, apex, pyxclib)",
            )
        if importlib.util.find_spec("apex") is None:
            raise UpstreamError(
                "apex is not installed; Renée's dl_base imports it and main.start uses its FusedSGD/FusedAdam",
                where="python environment",
                fix="install NVIDIA apex with its CUDA extensions (Renée's install2.sh: commit 5c9625c)",
            )

    def check_upstream_args(self, args: list[str]) -> None:
        """Renée's flags after ``--``, checked before any stage runs: the ones the adapter sets are refused,
        and those that become file names (--expname, --tf) must keep the files inside the run folder."""
        if flag_value(args, "--data-dir") is not None:
            raise ConfigError(
                "--data-dir is set by the renee adapter", where="upstream arguments", fix="remove --data-dir after --"
            )
        if "--infer" in args:
            raise ConfigError(
                "--infer trains nothing and writes no score matrix", where="upstream arguments", fix="remove --infer"
            )
        try:
            maxlen = int(str(flag_value(args, "--maxlen", DEFAULTS["--maxlen"])))
        except ValueError:
            raise ConfigError("--maxlen must be an integer", where="upstream arguments") from None
        if maxlen < 1:
            raise ConfigError(f"--maxlen {maxlen} must be >= 1", where="upstream arguments")
        expname = str(flag_value(args, "--expname", DEFAULTS["--expname"]))
        if not expname or expname in (".", "..") or "/" in expname or "\\" in expname:
            raise ConfigError(f"--expname {expname!r} must be a plain name (it becomes a folder of the run)",
                              where="upstream arguments --expname", fix="use letters, digits, '-' or '_'")  # fmt: skip
        tf = str(flag_value(args, "--tf", DEFAULTS["--tf"]))
        rel = os.path.normpath(f"d/{files.tokenizer_dir_name(tf)}-{maxlen}")
        if rel == ".." or rel.startswith(("../", "/")):
            raise ConfigError(f"--tf {tf!r} would put Renée's token files outside the run folder ({rel})",
                              where="upstream arguments --tf",
                              fix="give the encoder as an HF name or a path without '..' components")  # fmt: skip

    def prepare(self, ctx: Arm) -> LaunchSpec:
        args = list(ctx.upstream_args)
        self.check_upstream_args(args)
        self.check_runtime()
        tf = str(flag_value(args, "--tf", DEFAULTS["--tf"]))
        maxlen = int(str(flag_value(args, "--maxlen", DEFAULTS["--maxlen"])))
        expname = str(flag_value(args, "--expname", DEFAULTS["--expname"]))

        n_labels = ctx.y_train.shape[1]
        n_cols = files.padded_labels(n_labels)
        targets = files.pad_columns(ctx.targets, n_cols)
        targets.sum_duplicates()
        targets.eliminate_zeros()
        if targets.shape[0] != len(ctx.trn_texts):
            raise UpstreamError(
                f"{targets.shape[0]} target rows but {len(ctx.trn_texts)} training texts", where=str(ctx.workdir)
            )

        data_dir = ctx.workdir / DATA_DIR_NAME
        data_dir.mkdir(parents=True, exist_ok=True)
        from lever_plugins.data import write_sparse

        write_sparse(data_dir / "trn_X_Y.txt", targets)
        y_tst = files.pad_columns(ctx.y_test, n_cols)
        y_tst.data[:] = 1.0
        write_sparse(data_dir / "tst_X_Y.txt", y_tst)
        files.write_filter(data_dir / "tst_filter_labels.txt", ctx.tst_filter)

        from transformers import AutoTokenizer

        try:
            try:  # as CreateTokenizedFiles.py loads it
                tokenizer = AutoTokenizer.from_pretrained(tf, do_lower_case=True)
            except TypeError:
                tokenizer = AutoTokenizer.from_pretrained(tf)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load the tokenizer of --tf {tf}: {str(exc).splitlines()[0]}",
                where="upstream arguments --tf",
                fix="pass a Hugging Face model name or local folder that Renée's AutoModel can load too",
            ) from None
        tok = check_inside(ctx.workdir, files.token_dir(data_dir, tf, maxlen), where="upstream arguments --tf")
        files.write_tokens(tok, "trn_doc", ctx.trn_texts, tokenizer, maxlen)
        files.write_tokens(tok, "tst_doc", ctx.tst_texts, tokenizer, maxlen)
        files.write_tokens(tok, "lbl", ctx.lbl_texts, tokenizer, maxlen)

        payload: dict[str, Any] = {"soft": ctx.lever, "n_labels": n_labels}
        if ctx.lever:
            sp.save_npz(ctx.workdir / "targets.npz", targets)
            y = files.pad_columns(ctx.y_train, n_cols)
            y.data[:] = 1.0
            sp.save_npz(ctx.workdir / "y_train.npz", y)
            payload.update(
                trn_path=str((data_dir / "trn_X_Y.txt").resolve()),
                targets=str((ctx.workdir / "targets.npz").resolve()),
                y_train=str((ctx.workdir / "y_train.npz").resolve()),
                target_shape=list(targets.shape),
            )
        out = files.score_path(ctx.workdir, data_dir, expname)
        check_inside(ctx.workdir, out.parent, where="upstream arguments --expname")
        if out.parent.exists():
            shutil.rmtree(out.parent)  # a previous run's scores must not pass for this one's
        argv = ["--data-dir", str(data_dir.resolve()), "--seed", str(ctx.seed)]
        return LaunchSpec(script="main.py", argv=argv, payload={**payload, "score_path": str(out)})

    # -- patches / collect --------------------------------------------------------------------------
    def patches(self, payload: dict[str, Any]) -> list[Patch]:
        from lever_renee.patches import all_patches, loss_patches

        loss = self.plugin_loss()
        if not payload.get("soft"):
            return loss_patches(loss) if loss is not None else []
        return all_patches(payload, loss)

    def collect(self, ctx: Arm, spec: LaunchSpec) -> sp.csr_matrix:
        return files.read_scores(
            Path(spec.payload["score_path"]),
            len(ctx.tst_texts),
            ctx.y_train.shape[1],
            filter_pairs=np.asarray(ctx.tst_filter) if ctx.tst_filter is not None else None,
            top_k=ctx.top_k,
        )
