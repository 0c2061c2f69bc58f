"""The ``xreg`` adapter: XReg's ``xreg_train`` / ``xreg_predict`` on LEVER's blended soft targets.

XReg is C++, so nothing is patched: LEVER reaches it through its input files. What its source says
(checked at the tested commit, and by ``lever doctor xreg`` on the user's checkout):

- ``-w 1`` (``Param::weighted``) declares label values continuous in [0, 1]. With the logistic-regression
  solvers (``-k 1`` / ``-kleaf 1``: L2R_LR_DUAL; ``3``: L2R_LR_PRIMAL) ``LinearClassifier::prepareWtMat``
  turns a target r in (0, 1) into two weighted copies of the point, a positive of cost ∝ r and a negative
  of cost ∝ (1 − r): exactly the soft BCE λ·y + (1 − λ)·p̂ LEVER asks for. At a leaf each point's values
  are divided by its largest value there, which becomes the point's weight; internal nodes regress
  the share of a point's mass on each side. With the default SVC kinds (0) the values are ignored.
- Prediction multiplies the node probabilities σ(w·x) down the beam (kind 1); kind 3 is scored as
  log|w·x| by ``getNewScore``, not as a probability, so kind 1 is the default for both levels.
- For binary targets ``-w 1`` changes nothing (every value is 1, every weight the LR cost), so both arms
  run with the same flags: only the target file (and the N + L rows) differ.

Traps handled here (SOURCE.md): the model folder must exist before ``xreg_train``; ``xreg_predict``
crashes on fewer than 6 test rows (rows are padded, their scores dropped); ``max_leaf >= 2 × labels``
gives a tree of depth 0 and a crash (clamped to 2L − 1); options are read in pairs (an odd count
reads past argv); ``num_threads(4)`` is hard-coded in one loop (``OMP_THREAD_LIMIT`` caps it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import scipy.sparse as sp

from lever_plugins.data import write_sparse
from lever_plugins.errors import ConfigError, UpstreamError
from lever_plugins.wrap import Arm, LaunchSpec, SourceText, WrapAdapter
from lever_xreg import files

PINNED = "d2f49f6e7c1c526f589b161ab2b6762918dbbced"
# What the adapter depends on in a checkout: the Makefile, the sources of the two targets it builds
# (xreg_train, xreg_predict: their .cpp files, Tools/*.cpp by the Makefile's glob) and every header those
# include. Not Makefile.win, xreg_metric.cpp or Tools/xreg_metric.h: a checkout without them builds and
# runs the same, so their absence must not make it "untested".
DEPENDS = (
    "Source/Makefile", "Source/xreg_train.cpp", "Source/xreg_predict.cpp", "Source/xreg.cpp", "Source/xreg.h",
    "Source/LinearClassifier.h", "Source/Param.h",
    *(f"Tools/{n}" for n in ("algos.cpp", "algos.h", "blas.h", "blasp.h", "config.h", "data.h", "daxpy.cpp",
                             "ddot.cpp", "dnrm2.cpp", "dscal.cpp", "linear_classifiers.cpp", "linear_classifiers.h",
                             "mat.cpp", "mat.h", "stats.cpp", "stats.h", "tail_classifiers.cpp", "tail_classifiers.h",
                             "timer.h", "tron.cpp", "tron.h", "utils.h")),
)  # fmt: skip
# sha256 (lever_plugins.wrap.contract.file_digest) of DEPENDS in deepeshhada/Parabel at PINNED, the XReg
# sources (the official nilesh2797/XReg could not be obtained). Fingerprints only: the licence forbids
# publishing the code.
TESTED: dict[str, dict[str, str]] = {
    PINNED: {
        "Source/LinearClassifier.h": "221dc560f3d7d127fe981dc38680f088f1ab6e97f8dd2532719acbe0a2b257ce",
        "Source/Makefile": "14c97bdec6809af58a99e3e72b7e9b012f6b5bcc5d1043dc839b320590b1c7e6",
        "Source/Param.h": "f500c5d4d03c6f2422cab4442716047dbbdf43fd9c8a8c0af932c74b1e53863d",
        "Source/xreg.cpp": "9a0bfa1c1c24c6333961aa6a51eb9453769dfaa124374227ac700f9f64282a8d",
        "Source/xreg.h": "c934d2f47b38f8997f1b25a7374de4a6c6195865b6c1df9cc6847efabcb48fa9",
        "Source/xreg_predict.cpp": "72cda0d5a96b92573871d8700522067bdf55709a98fa2ca94e8eafc4ceb3f963",
        "Source/xreg_train.cpp": "f3d388b1ed8e90e5a58ba982a8a87016474c5e565cc390ca166e8ae4f7fda274",
        "Tools/algos.cpp": "03110b214ec0e108ae94cbc5c78f4814e9c6c573d4c16d4cb3e277ad82e7a0bb",
        "Tools/algos.h": "c3e91847cd4b4a96baf62eccb8005b016f0042e523f1fb2368a6c65a335a921c",
        "Tools/blas.h": "9b64d5dd1db145886914a7f4e728d41020969650ff4c2d43f0ed94dde736a982",
        "Tools/blasp.h": "9b02663efaf2f5a3f61c65789193220e42f01d762ee58fb0af5673e23de8e2d8",
        "Tools/config.h": "d75b7c44bb73a25d528457557991f600407b1f2f0a8ef4331a41c247bf501976",
        "Tools/data.h": "25a9446a301c53222fa582ff7f402027191f8ffb30ee4d6633d5ae4d4388ea7d",
        "Tools/daxpy.cpp": "a4205f6bb36b49906eb92ac8ea148511d89be412ea37ad2e18e2ca13436a0210",
        "Tools/ddot.cpp": "e3794a8401a198147bb0f0d4981befb6815988b56c8ceac388a8dbb3f7655d09",
        "Tools/dnrm2.cpp": "a57416fc7e6f00ad80af6a6cac68ef38cb19fc5000c197395d197ab602e48c56",
        "Tools/dscal.cpp": "4299a59bf3c930f8c02372a50313386c2b8535307d1fe3a185e30adafedbbe1b",
        "Tools/linear_classifiers.cpp": "16d7380e96f9ec22100e2cd97e32b32946d47423bf02cb4156c029e5b1f45a75",
        "Tools/linear_classifiers.h": "ee4eaed4901c7710ee414c47070939cf29866de0043b6f91641475cce419b441",
        "Tools/mat.cpp": "31a3a7c07740d59bfc13717c4e8fd571249479bd504b2c9aa8f596519e2cfdb6",
        "Tools/mat.h": "5936051c38f3fc5162a693b5ebfd98027f69b26b634fb75a30aee2c88b0fd3c7",
        "Tools/stats.cpp": "12476431d41d7e80daf3efc3ba6da21539c38aeb97560f74c819a0ad774468a1",
        "Tools/stats.h": "fd007ddfe8d5b50bf1092008dc342c5a19451170c1e74dba13e6e606cf013bda",
        "Tools/tail_classifiers.cpp": "5d847321a917a663b6a12bdf2294227c33e3b1118fda0fffba16844ab446092f",
        "Tools/tail_classifiers.h": "defcd48714834c843cefd4fa61432342e00cc0f60f5ba14108125e79dbe5f4b5",
        "Tools/timer.h": "a84ccdd4f2f4ac8fa43593ea2e8af95950ba4bfc0b46efeee21a71fcc3ef01ac",
        "Tools/tron.cpp": "1791e88c4e70082ac1aa62f67525c01138b414fe767c0d25b0003f549021692c",
        "Tools/tron.h": "077f6696c899da15758e02a234f5c4269b578bf3833ea1e0d5459b0da0315899",
        "Tools/utils.h": "22f6c3f6bc8d1e44f627d1cd8f3d22067a4865b4dc28722aa0f32f81c2d834ae",
    }
}

BUILD_PARTS = ["Source", "Tools"]
BINARIES = ["xreg_train", "xreg_predict"]
LR_KINDS = (1, 3)  # L2R_LR_DUAL, L2R_LR_PRIMAL: the solvers that read soft values under -w 1
FEATURES = ("tfidf", "encoder")


def build_cache() -> Path:
    from lever_plugins.stages import cache_dir

    return cache_dir() / "xreg-build"


class XregAdapter(WrapAdapter):
    """``[trainer] adapter = "xreg"``; options (``[trainer] options = {...}``) map to XReg's flags:
    ``trees`` -t, ``max_leaf`` -m, ``cost`` -c, ``iterations`` -n, ``eps`` -ecl, ``weight_threshold``
    -tcl, ``kind`` -k, ``leaf_kind`` -kleaf, ``tail_classifier`` -r, ``beam`` -B, ``threads`` -T
    (default 2); ``features`` "tfidf" (bag of words of the texts) or "encoder" (the frozen [encoder]
    embeddings); ``bin_dir``: prebuilt xreg_train/xreg_predict instead of building the checkout.
    Arguments after ``--`` go to xreg_train; ``predict_args`` (a list) to xreg_predict."""

    name = "xreg"
    upstream = "https://github.com/deepeshhada/Parabel (XReg's sources; official: github.com/nilesh2797/XReg)"
    tested = TESTED

    def __init__(
        self,
        features: str = "tfidf",
        threads: int = 2,
        trees: int = 3,
        max_leaf: int = 100,
        cost: float = 10.0,
        iterations: int = 20,
        eps: float = 0.1,
        weight_threshold: float = 0.05,
        kind: int = 1,
        leaf_kind: int = 1,
        tail_classifier: bool = False,
        beam: int = 10,
        min_df: int = 1,
        max_features: int | None = None,
        bin_dir: str = "",
        predict_args: list[str] | None = None,
    ):
        super().__init__(
            features=features, threads=threads, trees=trees, max_leaf=max_leaf, cost=cost, iterations=iterations,
            eps=eps, weight_threshold=weight_threshold, kind=kind, leaf_kind=leaf_kind,
            tail_classifier=tail_classifier, beam=beam, min_df=min_df, max_features=max_features, bin_dir=bin_dir,
            predict_args=predict_args,
        )  # fmt: skip
        where = "[trainer] options (adapter xreg)"
        if features not in FEATURES:
            raise ConfigError(f"features = {features!r} is not one of {', '.join(FEATURES)}", where=where)
        for key, k in (("kind", kind), ("leaf_kind", leaf_kind)):
            if k not in LR_KINDS:
                raise ConfigError(
                    f"{key} = {k}: XReg reads soft target values only with its logistic-regression solvers",
                    where=where,
                    fix=f"use {key} = 1 (L2R_LR_DUAL) or 3 (L2R_LR_PRIMAL)",
                )
        for key, v in (("threads", threads), ("trees", trees), ("max_leaf", max_leaf), ("beam", beam)):
            if int(v) < 1:
                raise ConfigError(f"{key} = {v} must be >= 1", where=where)
        self.features = features
        self.threads, self.trees, self.max_leaf = int(threads), int(trees), int(max_leaf)
        self.cost, self.iterations, self.eps, self.weight_threshold = cost, int(iterations), eps, weight_threshold
        self.kind, self.leaf_kind, self.tail_classifier, self.beam = kind, leaf_kind, bool(tail_classifier), int(beam)
        self.min_df, self.max_features = min_df, max_features
        self.bin_dir = bin_dir
        self.predict_args = list(predict_args or [])
        check_pairs(self.predict_args, "predict_args")

    @property
    def needs_features(self) -> bool:  # the pipeline encodes the texts only for features = "encoder"
        return self.features == "encoder"

    # -- contract -------------------------------------------------------------------------------
    def contract(self) -> list[SourceText]:
        p, lc, x = "Source/Param.h", "Source/LinearClassifier.h", "Source/xreg.cpp"
        flags = [
            ("-T", "num_thread", "threads"),
            ("-t", "num_tree", "number of trees"),
            ("-s", "start_tree", "tree ids (seeds) start at 0"),
            ("-w", "weighted", "-w 1: label values are continuous relevance in [0, 1]"),
            ("-k", "classifier_kind", "-k 1: logistic regression at internal nodes (reads soft values)"),
            ("-kleaf", "leaf_classifier_kind", "-kleaf 1: logistic regression at leaves (reads soft values)"),
            ("-c", "classifier_cost", "cost"),
            ("-m", "max_leaf", "labels per leaf (clamped below 2 x labels)"),
            ("-n", "classifier_maxitr", "solver iterations"),
            ("-ecl", "classifier_eps", "solver tolerance"),
            ("-tcl", "classifier_threshold", "weight sparsification"),
            ("-r", "tail_classifier", "tail classifier on/off"),
            ("-B", "beam_width", "prediction beam"),
            ("-p", "per_label_predict", "-p 0: top labels per test point"),
        ]
        return [
            *(SourceText.flag(p, f, sets=v, why=w) for f, v, w in flags),
            SourceText(
                p, r"L2R_L2LOSS_SVC_DUAL\s*=\s*0\s*,\s*L2R_LR_DUAL\s*,\s*L2R_L2LOSS_SVC_PRIMAL\s*,\s*L2R_LR_PRIMAL\b",
                "kinds 1 = L2R_LR_DUAL, 3 = L2R_LR_PRIMAL", why="the numbers passed to -k / -kleaf",
            ),  # fmt: skip
            SourceText.function(lc, "prepareWtMat", why="a soft target r -> positive copy (cost r), negative (1 - r)"),
            SourceText(lc, r"\(\s*1\s*-\s*val\s*\)", "negative copy weight (1 - val)", why="soft BCE, not binary"),
            SourceText.function(x, "train_leaf_classifiers", why="leaf values divided by the point's max (-w 1)"),
            SourceText.function(x, "wt_partition_to_assign_mat", why="internal nodes regress soft mass (-k 1)"),
            SourceText.function(x, "XregPredict::getNewScore", why="kind 1 scores log sigmoid(w.x) down the beam"),
            SourceText("Source/Makefile", r"^xreg_train\s*:", "make target xreg_train", why="built once, cached"),
            SourceText("Source/Makefile", r"^xreg_predict\s*:", "make target xreg_predict", why="built once, cached"),
            SourceText.function("Source/xreg_train.cpp", "check_valid_foldername", why="model folder must exist"),
        ]

    # -- binaries -------------------------------------------------------------------------------
    def binaries(self, upstream: Path, log: Any = None) -> Path:
        """The folder with xreg_train and xreg_predict: ``bin_dir``, else the cached build of ``upstream``."""
        from lever_plugins.wrap.native import build_cached

        if self.bin_dir:
            d = Path(self.bin_dir).expanduser()
            missing = [b for b in BINARIES if not os.access(d / b, os.X_OK)]
            if missing:
                raise UpstreamError(
                    f"no executable {', '.join(missing)} in bin_dir",
                    where=str(d),
                    fix="build XReg (make in its Source folder) or drop bin_dir to let the adapter build it",
                )
            return d
        return build_cached(upstream, BUILD_PARTS, "Source", BINARIES, build_cache(), what="XReg", log=log)

    def preflight(self, config: Any) -> None:
        """The contract, then (before any stage runs) whether the binaries exist or can be built."""
        from lever_plugins.wrap.native import build_key, check_toolchain

        super().preflight(config)
        if not self.bin_dir:
            built = build_cache() / build_key(Path(config.upstream), BUILD_PARTS)[:24] / "Source"
            if not all(os.access(built / b, os.X_OK) for b in BINARIES):
                check_toolchain("XReg")

    # -- files and commands ---------------------------------------------------------------------
    def train_options(self, n_labels: int) -> list[str]:
        """xreg_train's flags (pairs): soft-target regression (-w 1, logistic kinds) and the settings."""
        return [
            "-s", "0", "-T", str(self.threads), "-t", str(self.trees), "-w", "1",
            "-k", str(self.kind), "-kleaf", str(self.leaf_kind), "-c", f"{self.cost:g}",
            "-m", str(clamp_max_leaf(self.max_leaf, n_labels)), "-n", str(self.iterations),
            "-ecl", f"{self.eps:g}", "-tcl", f"{self.weight_threshold:g}", "-r", str(int(self.tail_classifier)),
        ]  # fmt: skip

    def predict_options(self) -> list[str]:
        return ["-T", str(self.threads), "-B", str(self.beam), "-p", "0", *self.predict_args]

    def check_upstream_args(self, args: list[str]) -> None:
        check_pairs(args, "arguments after --")

    def prepare(self, ctx: Arm) -> LaunchSpec:
        check_pairs(ctx.upstream_args, "arguments after --")
        targets = files.soft_targets(ctx.targets)
        n_rows, n_labels = targets.shape
        if self.features == "tfidf":
            x_rows, x_tst = files.tfidf_features(
                ctx.trn_texts[: ctx.n_docs] + ctx.lbl_texts, ctx.trn_texts, ctx.tst_texts,
                min_df=self.min_df, max_features=self.max_features,
            )  # fmt: skip
        else:
            x_rows = files.dense_features(ctx.x_train, n_rows, "training")
            x_tst = files.dense_features(ctx.x_test, len(ctx.tst_texts), "test")
        x_tst, n_pad = files.pad_rows(x_tst)

        w = ctx.workdir.resolve()  # the commands run in it: relative paths would resolve twice
        model = w / "model"
        shutil.rmtree(model, ignore_errors=True)  # no trees of an earlier, interrupted run
        model.mkdir(parents=True)  # xreg_train writes into it but does not create it
        paths = {k: w / f"{k}.txt" for k in ("trn_X_Xf", "trn_X_Y", "tst_X_Xf")}
        write_sparse(paths["trn_X_Xf"], x_rows, nonneg=False)
        write_sparse(paths["trn_X_Y"], targets)
        write_sparse(paths["tst_X_Xf"], x_tst, nonneg=False)
        scores = w / "score_mat.txt"
        scores.unlink(missing_ok=True)

        bins = self.binaries(ctx.upstream, log=print)
        train = [str(bins / "xreg_train"), str(model), str(paths["trn_X_Xf"]), str(paths["trn_X_Y"])]
        train += [*self.train_options(n_labels), *ctx.upstream_args]
        predict = [str(bins / "xreg_predict"), str(model), str(scores), str(paths["tst_X_Xf"]), *self.predict_options()]
        threads = str(self.threads)
        return LaunchSpec(
            commands=[train, predict],
            cwd=w,
            env={"OMP_NUM_THREADS": threads, "OMP_THREAD_LIMIT": threads},
            payload={"scores": str(scores), "n_test": len(ctx.tst_texts), "n_labels": n_labels},
            info={
                "features": self.features,
                "feature_dim": int(x_rows.shape[1]),
                "max_leaf": clamp_max_leaf(self.max_leaf, n_labels),
                "test_rows_padded": n_pad,
                "target_nnz": int(targets.nnz),
                "soft_values": int(((targets.data > 0) & (targets.data < 1)).sum()),
                "xreg_bin": str(bins),
            },
        )

    def collect(self, ctx: Arm, spec: LaunchSpec) -> sp.csr_matrix:
        p = spec.payload
        return files.read_scores(Path(p["scores"]), p["n_test"], p["n_labels"], ctx.top_k)


def clamp_max_leaf(max_leaf: int, n_labels: int) -> int:
    """XReg's tree depth is ceil(log2(L / max_leaf)) + 1: zero (a crash) once max_leaf >= 2L, so at most 2L − 1."""
    return max(1, min(int(max_leaf), 2 * n_labels - 1))


def check_pairs(args: list[str], where: str) -> None:
    """XReg reads options as (-flag, value) pairs and ignores unknown flags: an odd count reads past argv."""
    if len(args) % 2 or any(not a.startswith("-") for a in args[::2]):
        raise ConfigError(
            f"XReg options must be '-flag value' pairs, got {' '.join(args) or '(none)'}",
            where=where,
            fix="e.g. -- -t 5 -m 50 (see XReg's README for the flags)",
        )
