"""``lever new-plugin NAME --kind KIND --out DIR``: a ready plugin distribution to start from.

It writes ``pyproject.toml`` (the ``lever`` entry point), ``<module>/plugin.py`` (the hook implemented and
documented, with a small working example), ``tests/test_<module>.py`` (a passing test) and a README.
``pip install DIR`` makes ``lever plugins`` list it. The examples are deliberately simple (hashing
embeddings, a nearest-centroid trainer, ...): replace their bodies, keep the calls.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import textwrap
from pathlib import Path

from lever_plugins.errors import ConfigError

KINDS = ("teacher", "soft-labels", "adapter", "baseline", "loss", "observer")

_HOOK = {
    "teacher": "lever_register_teachers",
    "soft-labels": "lever_register_soft_label_providers",
    "adapter": "lever_register_adapters",
    "baseline": "lever_register_baselines",
    "loss": "lever_loss",
    "observer": "lever_run_event",
}

_PLUGIN = {
    "teacher": '''
        """Teacher ``{reg}``: embeds documents and labels for the soft-label stage.

        The core calls ``factory(config, seed=seed, **options)``: ``config`` is the run's ``[teacher]``
        section (a TeacherConfig), ``seed`` the teacher's seed, ``options`` the ``[teacher.options]`` table
        (checked against this signature before any stage runs). Then ``preflight()`` (before any stage),
        ``fit(doc_texts, lbl_texts, y, workdir, resume=True) -> dict`` and ``embed(texts) -> ndarray``.
        """

        from __future__ import annotations

        import hashlib
        from pathlib import Path
        from typing import Any

        import numpy as np
        import scipy.sparse as sp
        from lever_plugins import hookimpl


        class {cls}:
            def __init__(self, config: Any, seed: int = 13, dim: int = 64):
                self.config = config
                self.seed = seed
                self.dim = int(dim)  # [teacher.options] dim = ...

            def preflight(self) -> None:
                """Raise a lever_plugins.errors.LeverError if the run cannot work (a model missing). Cheap."""

            def fit(self, doc_texts: list[str], lbl_texts: list[str], y: sp.csr_matrix, workdir: Path,
                    resume: bool = True) -> dict[str, Any]:
                """Train on documents, label texts and the N x L binary train matrix; files go to ``workdir``.
                Return JSON-able statistics (recorded in the run manifest)."""
                return {{"trained": False, "dim": self.dim}}

            def embed(self, texts: list[str]) -> np.ndarray:
                """One L2-normalised float32 row per text (documents and labels share the space)."""
                out = np.zeros((len(texts), self.dim), dtype=np.float32)
                for i, text in enumerate(texts):
                    for word in text.lower().split():
                        h = int.from_bytes(hashlib.sha1(f"{{self.seed}}:{{word}}".encode()).digest()[:4], "little")
                        out[i, h % self.dim] += 1.0
                out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
                return out


        @hookimpl
        def lever_register_teachers(register):
            register("{reg}", {cls})
        ''',
    "soft-labels": '''
        """Soft-label provider ``{reg}``: the teacher's neighbours as soft targets.

        The core calls ``factory(config, **options)``: ``config`` is the run's ``[soft_labels]`` section (a
        SoftLabelConfig), ``options`` the ``[soft_labels.options]`` table (checked against this signature
        before any stage runs). Then ``build(y_train, doc_emb, lbl_emb, has_text=None) -> SoftLabels``.
        This example runs the built-in kNN provider and scales the teacher's scores by ``scale``.
        """

        from __future__ import annotations

        from typing import Any

        import numpy as np
        import scipy.sparse as sp
        from lever_plugins import hookimpl
        from lever_plugins.soft_labels.augment import SoftLabels
        from lever_plugins.soft_labels.provider import KnnProvider


        class {cls}:
            def __init__(self, config: Any, scale: float = 0.9):
                self.config = config
                self.scale = float(scale)  # [soft_labels.options] scale = ...

            def build(self, y_train: sp.csr_matrix, doc_emb: np.ndarray | None, lbl_emb: np.ndarray,
                      has_text: np.ndarray | None = None) -> SoftLabels:
                """``y_aug``: (N+L) x L hard targets (train rows, then one row per label); ``soft``: same shape,
                ONLY the teacher-added pairs with scores in [0, 1] (never the ground truth)."""
                sl = KnnProvider(self.config).build(y_train, doc_emb, lbl_emb, has_text=has_text)
                soft = sl.soft.copy().tocsr()
                soft.data *= self.scale
                return SoftLabels(sl.y_aug, soft, sl.n_docs, {{**sl.stats, "scale": self.scale}})


        @hookimpl
        def lever_register_soft_label_providers(register):
            register("{reg}", {cls})
        ''',
    "adapter": '''
        """Adapter ``{reg}``: a trainer for one arm (base or +LEVER), implementing lever_plugins.Adapter.

        The core calls ``factory(**options)`` with the ``[trainer] options`` table (checked against this
        signature), reads the capabilities below, calls ``preflight(config)`` before any stage and
        ``train_predict(arm, config, loss)`` per arm: ``arm`` is a frozen lever_plugins.Arm (features,
        targets, texts, seed, ...), ``config`` the run's ``[trainer]`` section, ``loss`` the lever_loss hook.
        This example is a nearest-centroid classifier on the encoder features.
        """

        from __future__ import annotations

        from typing import Any

        import numpy as np
        import scipy.sparse as sp
        from lever_plugins import Arm, LossFn, hookimpl


        class {cls}:
            name = "{reg}"
            upstream = ""  # where the trainer comes from (URL, PyPI name); "" for code in this package
            needs_features = True  # the core encodes texts with [encoder] into arm.x_train / arm.x_test
            takes_sparse = False  # arm.x_sparse ([encoder] tfidf = true) is refused when False
            supports_finetune = False  # [trainer] finetune = true is refused when False
            takes_loss_hook = False  # True only if train_predict calls ``loss``

            def __init__(self, temperature: float = 1.0):
                self.temperature = float(temperature)  # [trainer] options = {{ temperature = ... }}

            def preflight(self, config: Any) -> None:
                """Raise a lever_plugins.errors.LeverError (what, where, fix) if this run cannot train."""

            def train_predict(self, arm: Arm, config: Any, loss: LossFn) -> tuple[sp.csr_matrix, dict[str, Any]]:
                """Test scores (CSR, n_test x L, at most config.top_k per row) and JSON-able stats."""
                x, t = np.asarray(arm.x_train, np.float32), sp.csr_matrix(arm.targets)
                mass = np.asarray(t.sum(axis=0)).ravel()
                centroids = np.asarray(t.T @ x) / np.maximum(mass, 1e-9)[:, None]  # L x d, soft-weighted
                scores = np.asarray(arm.x_test, np.float32) @ centroids.T / self.temperature
                k = min(int(config.top_k), scores.shape[1])
                top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
                rows = np.repeat(np.arange(scores.shape[0]), k)
                out = sp.csr_matrix((scores[rows, top.ravel()], (rows, top.ravel())), shape=scores.shape)
                return out, {{"rows": int(t.shape[0])}}


        @hookimpl
        def lever_register_adapters(register):
            register("{reg}", {cls})
        ''',
    "baseline": '''
        """Baseline ``{reg}``: an extra row in the ``lever ab`` table (``[eval] baselines = ["{reg}"]``).

        The core calls ``factory(**options)`` with the ``[baselines.{reg}]`` table (checked against this
        signature before any stage runs), then ``run(ctx) -> CSR`` test scores (n_test x L), where ``ctx``
        is a lever_plugins.baselines.BaselineContext (run, ds, cfg, sig, feats, arms, scores, log, uses).
        Cache expensive work with lever_plugins.stages.cached_stage(..., uses=ctx.uses).
        This example ranks labels by their training frequency (the same list for every test document).
        """

        from __future__ import annotations

        from typing import Any

        import numpy as np
        import scipy.sparse as sp
        from lever_plugins import hookimpl


        class {cls}:
            title = "{reg} (label popularity)"

            def __init__(self, top_k: int = 10):
                self.top_k = int(top_k)  # [baselines.{reg}] top_k = ...

            def run(self, ctx: Any) -> sp.csr_matrix:
                freq = np.asarray(ctx.ds.binary_train().sum(axis=0)).ravel().astype(np.float32)
                top = np.argsort(-freq, kind="stable")[: self.top_k]
                n = len(ctx.ds.tst_texts)
                rows = np.repeat(np.arange(n), len(top))
                vals = np.tile(freq[top] / max(freq.max(), 1.0), n)
                return sp.csr_matrix((vals, (rows, np.tile(top, n))), shape=(n, len(freq)))


        @hookimpl
        def lever_register_baselines(register):
            register("{reg}", {cls})
        ''',
    "loss": '''
        """Loss plugin ``{reg}``: answers the lever_loss hook (firstresult) in every trainer that takes it.

        The core calls ``lever_loss(logits, targets, config)`` once per training step: logits and (soft)
        targets are torch tensors of one shape, ``config`` the run's ``[trainer]`` section. Return a scalar
        MEAN over the entries, or None to let the next plugin (finally the built-in BCE) answer. Adapters
        that cannot take a loss refuse a run with this plugin installed rather than ignore it.
        This example is BCE with positive targets weighted by POS_WEIGHT.
        """

        from __future__ import annotations

        from lever_plugins import hookimpl

        POS_WEIGHT = 2.0


        def weighted_bce(logits, targets, pos_weight: float = POS_WEIGHT):
            import torch.nn.functional as F

            weight = 1.0 + (pos_weight - 1.0) * targets  # soft targets weigh in proportion
            return F.binary_cross_entropy_with_logits(logits, targets, weight=weight, reduction="mean")


        @hookimpl
        def lever_loss(logits, targets, config):
            return weighted_bce(logits, targets)
        ''',
    "observer": '''
        """Observer ``{reg}``: receives every lever_run_event (stage_start, stage_end, metrics, ...).

        The core calls ``lever_run_event(run, event, payload)``: ``run`` is the Run (``run.root`` is the run
        folder), ``payload`` a JSON-able dict. The return value is ignored; observers touch no stage, so
        installing one never invalidates a cache. This example appends one JSON line per event.
        """

        from __future__ import annotations

        import json

        from lever_plugins import hookimpl

        LOG_NAME = "{module}.jsonl"


        @hookimpl
        def lever_run_event(run, event, payload):
            with open(run.root / LOG_NAME, "a") as fh:
                fh.write(json.dumps({{"event": event, **payload}}, default=str) + "\\n")
        ''',
}

_TEST = {
    "teacher": '''
        import numpy as np
        import scipy.sparse as sp
        from lever_plugins.config import TeacherConfig

        from {module} import plugin


        def registered():
            found = {{}}
            plugin.lever_register_teachers(register=lambda name, factory: found.setdefault(name, factory))
            return found


        def test_teacher_embeds_unit_rows(tmp_path):
            teacher = registered()["{reg}"](TeacherConfig(), seed=3, dim=32)
            teacher.preflight()
            stats = teacher.fit(["a b", "c"], ["a", "c"], sp.eye(2, format="csr"), tmp_path)
            assert isinstance(stats, dict)
            e = teacher.embed(["a b", "c", "a"])
            assert e.shape == (3, 32) and e.dtype == np.float32
            np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
            assert float(e[0] @ e[2]) > float(e[1] @ e[2])  # "a b" is nearer to "a" than "c" is
        ''',
    "soft-labels": '''
        import numpy as np
        import scipy.sparse as sp
        from lever_plugins.config import SoftLabelConfig
        from lever_plugins.soft_labels.provider import KnnProvider

        from {module} import plugin


        def test_soft_scores_are_the_knn_scores_scaled():
            found = {{}}
            plugin.lever_register_soft_label_providers(register=lambda n, f: found.setdefault(n, f))
            rng = np.random.default_rng(0)
            lbl = rng.normal(size=(6, 8)).astype(np.float32)
            lbl /= np.linalg.norm(lbl, axis=1, keepdims=True)
            y = sp.csr_matrix(np.eye(6, dtype=np.float32)[[0, 1, 2, 3]])
            config = SoftLabelConfig(tau_l=3, threshold=0.0)
            got = found["{reg}"](config, scale=0.5).build(y, None, lbl)
            want = KnnProvider(config).build(y, None, lbl)
            assert (got.y_aug != want.y_aug).nnz == 0
            np.testing.assert_allclose(got.soft.toarray(), 0.5 * want.soft.toarray(), rtol=1e-6)
        ''',
    "adapter": '''
        from pathlib import Path

        import numpy as np
        import scipy.sparse as sp
        from lever_plugins import Adapter, Arm
        from lever_plugins.config import TrainerConfig

        from {module} import plugin


        def test_adapter_scores_the_nearest_centroid_first():
            found = {{}}
            plugin.lever_register_adapters(register=lambda n, f: found.setdefault(n, f))
            adapter = found["{reg}"]()
            assert isinstance(adapter, Adapter)
            x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
            y = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32))
            x_test = np.array([[1, 0.05], [0, 1]], np.float32)
            arm = Arm(name="base", workdir=Path("unused"), targets=y, support=y, y_train=y,
                      y_test=sp.csr_matrix((2, 2), dtype=np.float32), trn_texts=[""] * 4, tst_texts=[""] * 2,
                      lbl_texts=["a", "b"], tst_filter=np.zeros((0, 2), np.int64), seed=0, x_train=x, x_test=x_test)
            config = TrainerConfig(top_k=1)
            adapter.preflight(config)
            scores, stats = adapter.train_predict(arm, config, loss=None)
            assert scores.shape == (2, 2) and scores.nnz == 2 and stats["rows"] == 4
            assert scores.toarray().argmax(axis=1).tolist() == [0, 1]
        ''',
    "baseline": '''
        from types import SimpleNamespace

        import scipy.sparse as sp

        from {module} import plugin


        def test_baseline_ranks_by_popularity():
            found = {{}}
            plugin.lever_register_baselines(register=lambda n, f: found.setdefault(n, f))
            y = sp.csr_matrix([[1, 0, 1], [0, 0, 1], [1, 0, 1]], dtype="float32")
            ds = SimpleNamespace(binary_train=lambda: y, tst_texts=["x", "y"])
            scores = found["{reg}"](top_k=2).run(SimpleNamespace(ds=ds))
            assert scores.shape == (2, 3)
            assert [sorted(r.indices.tolist()) for r in scores] == [[0, 2], [0, 2]]
            assert scores[0, 2] > scores[0, 0]
        ''',
    "loss": '''
        import torch

        from {module} import plugin


        def test_loss_weights_positives():
            logits = torch.tensor([[0.3, -1.2], [2.0, 0.1]], requires_grad=True)
            targets = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
            got = plugin.lever_loss(logits=logits, targets=targets, config=None)
            p = torch.sigmoid(logits)
            w = 1 + (plugin.POS_WEIGHT - 1) * targets
            want = (-(w * (targets * p.log() + (1 - targets) * (1 - p).log()))).mean()
            torch.testing.assert_close(got, want)
        ''',
    "observer": '''
        import json
        from types import SimpleNamespace

        from {module} import plugin


        def test_events_are_json_lines(tmp_path):
            run = SimpleNamespace(root=tmp_path)
            plugin.lever_run_event(run=run, event="stage_end", payload={{"stage": "teacher", "seconds": 1.5}})
            plugin.lever_run_event(run=run, event="metrics", payload={{"arm": "base"}})
            lines = [json.loads(x) for x in (tmp_path / plugin.LOG_NAME).read_text().splitlines()]
            assert lines == [{{"event": "stage_end", "stage": "teacher", "seconds": 1.5}},
                             {{"event": "metrics", "arm": "base"}}]
        ''',
}

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1.0"
description = "A lever-plugins {kind} plugin"
requires-python = ">=3.11"
dependencies = ["lever-plugins"]

[project.optional-dependencies]
test = ["pytest"]

# lever finds plugins through this entry-point group: the value is the module with the hooks.
[project.entry-points.lever]
{module} = "{module}.plugin"

[tool.setuptools]
packages = ["{module}"]

[tool.ruff]
line-length = 120
target-version = "py311"

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP"]

[tool.ruff.lint.isort]
known-first-party = ["{module}"]
"""

_README = """\
# {name}

A lever-plugins {kind} plugin (hook `{hook}`), registered as `{reg}`.

    pip install .            # then `lever plugins` lists it
    pytest tests             # its own test

{usage}
"""

_USAGE = {
    "teacher": '[teacher]\nname = "{reg}"\n[teacher.options]\ndim = 64',
    "soft-labels": '[soft_labels]\nprovider = "{reg}"\n[soft_labels.options]\nscale = 0.9',
    "adapter": '[trainer]\nadapter = "{reg}"\noptions = {{ temperature = 1.0 }}',
    "baseline": '[eval]\nbaselines = ["{reg}"]\n[baselines.{reg}]\ntop_k = 10',
    "loss": "Installed, it answers lever_loss for every trainer that takes the hook.",
    "observer": "Installed, it receives every run event (see {module}.jsonl in the run folder).",
}


def names(dist: str) -> tuple[str, str, str]:
    """(import name, registered name, class name) of distribution ``dist`` (e.g. ``lever-myteacher``)."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([._-][A-Za-z0-9]+)*", dist):
        raise ConfigError(
            f"{dist!r} is not a distribution name",
            where="NAME",
            fix="use letters, digits and '-', e.g. lever-myteacher",
        )
    module = re.sub(r"[^a-z0-9]+", "_", dist.lower())
    reg = re.sub(r"^lever[_-]", "", dist.lower()).replace("_", "-") or module
    cls = "".join(p.capitalize() for p in re.split(r"[^a-z0-9]+", reg) if p) or "Plugin"
    if cls[0].isdigit():
        cls = "P" + cls
    return module, reg, cls


def scaffold(dist: str, kind: str, out: str | Path) -> list[Path]:
    """Write the distribution ``dist`` of plugin ``kind`` into ``out`` (a new or empty folder), all at once:
    into a temporary folder beside it, renamed into place. Returns the files written."""
    if kind not in KINDS:
        raise ConfigError(f"unknown plugin kind {kind!r}", where="--kind", fix=f"one of {', '.join(KINDS)}")
    module, reg, cls = names(dist)
    dest = Path(out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError("the output folder exists and is not empty", where=str(dest), fix="pick a new --out")
    fmt = {"name": dist, "kind": kind, "module": module, "reg": reg, "cls": cls, "hook": _HOOK[kind]}
    files = {
        "pyproject.toml": _PYPROJECT.format(**fmt),
        "README.md": _README.format(**fmt, usage=textwrap.indent(_USAGE[kind].format(**fmt), "    ")),
        f"{module}/__init__.py": f'"""{dist}: a lever-plugins {kind} plugin (hooks in {module}.plugin)."""\n',
        f"{module}/plugin.py": textwrap.dedent(_PLUGIN[kind]).lstrip().format(**fmt),
        f"tests/test_{module}.py": textwrap.dedent(_TEST[kind]).lstrip().format(**fmt),
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for rel, text in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
        if dest.exists():
            dest.rmdir()  # empty (checked above)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [dest / rel for rel in files]
