"""``[trainer] finetune = true``: the built-in OvA trainer trains the encoder with its head.

Oracles: the frozen path (``ova.train_predict`` on the encoder's own features), a second run with the same
seed, the saved encoder loaded back with ``Encoder``, ``ova.knn_prior`` on independently computed
features, and the pre-trained weights. Small random BERT (tests/conftest.py ``tiny_model``), max_len 16.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import WORDS, arm_for

from lever_plugins import config
from lever_plugins.errors import LeverError
from lever_plugins.stages import loss_fn
from lever_plugins.teacher.encoder import Encoder
from lever_plugins.trainer import finetune, ova
from lever_plugins.trainer.adapter import BuiltinAdapter

L, N, N_TST = 8, 64, 16


@pytest.fixture(autouse=True, scope="module")
def _threads(one_torch_thread):
    """One torch thread: the machine is shared, and CPU determinism holds for a fixed thread count."""


def _toy(n: int, seed: int) -> tuple[list[str], sp.csr_matrix]:
    """Documents naming their labels' words plus a distractor word: learnable from the text alone."""
    rng = np.random.default_rng(seed)
    texts, y = [], sp.lil_matrix((n, L), dtype=np.float32)
    for i in range(n):
        labs = sorted(set(rng.integers(0, L, 2).tolist()))
        texts.append(" ".join(WORDS[j] for j in labs) + f" {WORDS[int(rng.integers(L, len(WORDS)))]} tool")
        y[i, labs] = 1.0
    return texts, y.tocsr()


@pytest.fixture(scope="module")
def toy():
    trn, y = _toy(N, 0)
    tst, y_tst = _toy(N_TST, 1)
    return trn, y, tst, y_tst


def _cfg(model: Path, **trainer) -> config.RunConfig:
    t = {"finetune": True, "epochs": 2, "batch_size": 16, "negatives": "full", "lr": 0.05, "encoder_lr": 1e-3,
         "top_k": L, "shortlist_size": 3, **trainer}  # fmt: skip
    return config.from_dict({"encoder": {"model": str(model), "max_len": 16, "batch_size": 32}, "trainer": t})


def _encode(model: Path | str, texts: list[str]) -> np.ndarray:
    return Encoder(str(model), 16, device="cpu").encode(texts, batch_size=32, progress=False)


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def _same(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return (a.indptr == b.indptr).all() and (a.indices == b.indices).all() and (a.data == b.data).all()


def test_saved_encoder_reproduces_the_train_time_scores(toy, tiny_model: Path, tmp_path: Path):
    """Sparse head and kNN fusion alongside: the scores are exactly the head on the saved encoder's test
    embeddings, fused with the kNN vote in the fine-tuned space; the weights moved."""
    from lever_plugins.tfidf import tfidf_features

    trn, y, tst, _ = toy
    cfg = _cfg(tiny_model, knn_alpha=0.3, knn_k=5)
    (xs_trn, xs_tst), _ = tfidf_features(trn, tst)
    scores, stats = finetune.train_predict((trn, tst), y, cfg.trainer, cfg.encoder, seed=5, progress=False,
                                           x_sparse=(xs_trn, xs_tst), encoder_dir=tmp_path / "enc")  # fmt: skip
    assert stats["finetune"]["steps"] == 2 * (N // 16)
    meta = json.loads((tmp_path / "enc" / finetune.META_NAME).read_text())
    assert meta["encoder_lr"] == 1e-3 and meta["max_len"] == 16
    # The head of a second run with the same seed (test_same_seed_same_scores: it is the same head).
    with finetune._reproducible("cpu", 5):
        model, _, _ = finetune.fit(trn, y, cfg.trainer, cfg.encoder, 5, progress=False, x_sparse=xs_trn)
    x_trn, x_tst = _encode(tmp_path / "enc", trn), _encode(tmp_path / "enc", tst)
    prior = ova.knn_prior(x_trn, y, x_tst, 5)
    assert _same(scores, model.topk(x_tst, L, x_sparse=xs_tst, prior=prior, alpha=0.3))
    # The pre-trained space gives other features and another fused score.
    p_trn, p_tst = _encode(tiny_model, trn), _encode(tiny_model, tst)
    assert np.abs(p_tst - x_tst).max() > 1e-3
    pre = model.topk(p_tst, L, x_sparse=xs_tst, prior=ova.knn_prior(p_trn, y, p_tst, 5), alpha=0.3)
    assert not np.allclose(pre.toarray(), scores.toarray(), atol=1e-4)
    before, after = _weights(tiny_model), _weights(tmp_path / "enc")
    assert before.keys() == after.keys()
    moved = [k for k in before if not np.array_equal(before[k], after[k])]
    assert "embeddings.word_embeddings.weight" in moved and "encoder.layer.1.output.dense.weight" in moved


@pytest.mark.parametrize("mode", ["full", "shortlist"])
def test_same_seed_same_scores(toy, tiny_model: Path, mode: str):
    trn, y, tst, _ = toy
    cfg = _cfg(tiny_model, negatives=mode)
    runs = [finetune.train_predict((trn, tst), y, cfg.trainer, cfg.encoder, seed=3, progress=False)
            for _ in range(2)]  # fmt: skip
    assert _same(runs[0][0], runs[1][0])
    assert runs[0][1]["train_loss"] == runs[1][1]["train_loss"]
    other, _ = finetune.train_predict((trn, tst), y, cfg.trainer, cfg.encoder, seed=4, progress=False)
    assert not _same(other, runs[0][0])  # the seed reaches the batch order and dropout


@pytest.fixture(scope="module")
def no_dropout_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_model`` without dropout: in train mode its features equal the frozen ones."""
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path_factory.mktemp("nodrop") / "bert"
    m = AutoModel.from_pretrained(tiny_model, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    m.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


@pytest.mark.parametrize("mode", ["full", "shortlist"])
def test_encoder_lr_zero_is_the_frozen_path(toy, no_dropout_model: Path, tmp_path: Path, mode: str):
    """encoder_lr = 0: the encoder is unchanged, and head training on its live outputs is the frozen
    trainer on the pre-computed features (the per-batch features agree to float rounding)."""
    trn, y, tst, _ = toy
    cfg = _cfg(no_dropout_model, encoder_lr=0.0, negatives=mode)
    got, _ = finetune.train_predict((trn, tst), y, cfg.trainer, cfg.encoder, seed=7, progress=False,
                                    encoder_dir=tmp_path / "enc")  # fmt: skip
    before, after = _weights(no_dropout_model), _weights(tmp_path / "enc")
    assert all(np.array_equal(before[k], after[k]) for k in before)
    frozen_cfg = _cfg(no_dropout_model, negatives=mode, finetune=False)
    want, _ = ova.train_predict(_encode(no_dropout_model, trn), y, _encode(no_dropout_model, tst), frozen_cfg.trainer,
                                seed=7, progress=False)  # fmt: skip
    assert (got.indices == want.indices).all()
    np.testing.assert_allclose(got.data, want.data, rtol=1e-4, atol=1e-4)


def test_loss_falls_through_the_encoder(toy, tiny_model: Path):
    """With a head that barely moves (lr 1e-6), the loss can only fall if the encoder learns. (Unit-norm
    features against the fixed head bound the logits, so the fall is bounded too.)"""
    trn, y, tst, _ = toy
    losses = {}
    for lr in (0.0, 1e-2):
        cfg = _cfg(tiny_model, lr=1e-6, encoder_lr=lr, encoder_warmup=0.0, epochs=4)
        _, stats = finetune.train_predict((trn, tst), y, cfg.trainer, cfg.encoder, seed=1, progress=False)
        losses[lr] = stats["train_loss"]
    trained, still = losses[1e-2], losses[0.0]
    assert abs(still[-1] - still[0]) < 0.01 * still[0], still  # only dropout noise
    assert trained[-1] < trained[0] - 0.1 and trained[-1] < 0.9 * still[-1], (trained, still)


def test_loss_falls_and_test_p1_beats_chance_shortlist(toy, tiny_model: Path):
    """The default (shortlist) mode learns the toy end to end from a random encoder."""
    trn, y, tst, y_tst = toy
    cfg = _cfg(tiny_model, negatives="shortlist", epochs=6, encoder_lr=3e-3)
    scores, stats = finetune.train_predict((trn, tst), y, cfg.trainer, cfg.encoder, seed=2, progress=False)
    assert stats["train_loss"][-1] < 0.7 * stats["train_loss"][0], stats["train_loss"]
    top1 = np.asarray(scores.argmax(axis=1)).ravel()
    p1 = np.asarray(y_tst[np.arange(N_TST), top1]).ravel().mean()
    chance = y_tst.sum() / (N_TST * L)
    assert p1 > 2 * chance, (p1, chance)


def test_finetune_false_is_the_frozen_path(toy, tiny_model: Path, tmp_path: Path):
    """The builtin adapter with finetune off ignores texts and encoder: bit-identical to ova.train_predict."""
    trn, y, tst, _ = toy
    cfg = _cfg(tiny_model, finetune=False)
    x, xt = _encode(tiny_model, trn), _encode(tiny_model, tst)
    arm = arm_for(x, y, xt, 3, texts=(trn, tst), encoder=cfg.encoder, encoder_dir=tmp_path / "enc")
    got, _ = BuiltinAdapter(progress=False).train_predict(arm, cfg.trainer, loss_fn(cfg.trainer))
    want, _ = ova.train_predict(x, y, xt, cfg.trainer, seed=3, progress=False)
    assert _same(got, want)
    assert not (tmp_path / "enc").exists()


def test_adapter_finetune_needs_one_text_per_row(toy, tiny_model: Path):
    trn, y, tst, _ = toy
    cfg = _cfg(tiny_model)
    arm = arm_for(np.zeros((N, 0), np.float32), y, np.zeros((N_TST, 0), np.float32), 1, texts=(tst, tst),
                  encoder=cfg.encoder)  # fmt: skip
    with pytest.raises(LeverError, match="16 training texts but 64 target rows"):
        BuiltinAdapter(progress=False).train_predict(arm, cfg.trainer, loss_fn(cfg.trainer))
    with pytest.raises(LeverError, match="16 training texts but 64 target rows"):
        finetune.train_predict((tst, tst), y, cfg.trainer, cfg.encoder, seed=1, progress=False)


def test_stage_key_follows_the_finetune_settings():
    t = config.TrainerConfig()
    key = lambda tc: config.config_hash(config.trainer_key(tc))  # noqa: E731
    frozen = key(t)
    t.encoder_lr = 1e-3
    assert key(t) == frozen  # not read when finetune is off: frozen caches stay valid
    t.finetune = True
    on = key(t)
    assert on != frozen
    t.encoder_lr = 2e-5
    assert key(t) != on
    t.encoder_warmup = 0.2
    assert len({frozen, on, key(t)}) == 3


def test_ab_pipeline_finetunes_both_arms_and_caches(tmp_path: Path, tiny_lf: Path, tiny_model: Path,
                                                     monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    from lever_plugins.runner import run_ab

    monkeypatch.setenv("LEVER_CACHE_DIR", str(tmp_path / "cache"))
    values = {
        "seed": 3, "data": {"path": str(tiny_lf)},
        "encoder": {"model": str(tiny_model), "max_len": 16, "batch_size": 64, "tfidf": True},
        "teacher": {"model": str(tiny_model), "train": False, "max_len": 16},
        "soft_labels": {"tau_l": 3, "tau_d": 4, "threshold": 0.7},
        "trainer": {"finetune": True, "epochs": 1, "batch_size": 32, "negatives": "full", "lr": 0.05,
                    "knn_alpha": 0.3, "knn_k": 5},
        "eval": {"bootstrap": 20},
    }  # fmt: skip
    out = tmp_path / "run"
    run_ab(config.from_dict(values), out, log=lambda s: None)
    man = json.loads((out / "manifest.json").read_text())["stages"]
    for arm, rows in (("base", 60), ("lever", 72)):  # +LEVER: the 12 label texts are training rows
        st = man[f"train_{arm}"]
        assert f"{arm}/encoder/model.safetensors" in st["sha256"]
        assert st["stats"]["rows"] == rows and st["stats"]["finetune"]["steps"] == -(-rows // 32)
        assert _encode(out / arm / "encoder", ["audio tool"]).shape == (1, 32)
    done = {k: v["finished"] + v["key"] for k, v in man.items()}
    run_ab(config.from_dict(values), out, log=lambda s: None)  # everything cached
    again = json.loads((out / "manifest.json").read_text())["stages"]
    assert {k: v["finished"] + v["key"] for k, v in again.items()} == done
    values["trainer"]["encoder_lr"] = 1e-4
    run_ab(config.from_dict(values), out, log=lambda s: None)
    third = json.loads((out / "manifest.json").read_text())["stages"]
    changed = {k for k in done if third[k]["key"] != man[k]["key"]}
    assert changed == {"train_base", "train_lever"}


def test_unknown_model_with_finetune_is_the_model_error(tmp_path: Path, tiny_lf: Path):
    from lever_plugins.runner import run_ab

    cfg = config.from_dict({"data": {"path": str(tiny_lf)}, "encoder": {"model": str(tmp_path / "nope")},
                            "trainer": {"finetune": True}})  # fmt: skip
    with pytest.raises(LeverError) as exc:
        run_ab(cfg, tmp_path / "run", log=lambda s: None)
    assert "model folder not found" in exc.value.line() and "encoder.model" in exc.value.line()
    assert not (tmp_path / "run").exists()
