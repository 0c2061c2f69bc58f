"""Encoder: model resolution, parity with sentence-transformers, the embedding cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest

from lever_plugins.errors import LeverError
from lever_plugins.teacher import encoder as encmod
from lever_plugins.teacher.encoder import Encoder, embed_cached, resolve_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TEXTS = [
    "Real-time strategy game of ancient warfare (data files)",
    "GNU C library: shared libraries",
    "Perl module for parsing JSON",
    "x",
    "",
    "  leading and trailing spaces  ",
    "Ünïcödé text with accents ñ and symbols © ™",
    "utilities for the Debian package manager dpkg, including dpkg-query and dpkg-deb, which are "
    "used to install, remove and inspect binary packages; this sentence is long enough to be truncated",
    "python3 bindings for the GTK graphical toolkit",
    "a font",
    "library for reading and writing compressed tar archives in many formats",
    "command-line interface",
    "daemon",
    "documentation for the Rust standard library",
    "emacs major mode for editing markdown files",
    "TeX Live: LaTeX supplementary packages",
    "network file system client utilities",
    "audio player with a terminal user interface",
    "kernel headers",
    "scientific plotting library written in C++ with Python bindings",
]




def test_resolve_default_is_an_hf_folder():
    p = Path(resolve_model("default"))
    assert (p / "config.json").is_file()
    assert (p / "model.safetensors").is_file() or (p / "pytorch_model.bin").is_file()


def test_resolve_sentence_transformers_subfolder(tmp_path, tiny_model):
    # sentence-transformers v2 layout: the Transformer module in 0_Transformer/
    import shutil

    shutil.copytree(tiny_model, tmp_path / "st" / "0_Transformer")
    (tmp_path / "st" / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    assert Path(resolve_model(str(tmp_path / "st"))) == (tmp_path / "st" / "0_Transformer").resolve()


def test_resolve_errors_are_one_line_with_a_fix(tmp_path, monkeypatch):
    with pytest.raises(LeverError) as e:
        resolve_model(str(tmp_path / "nope" / "model"))
    assert "\n" not in str(e.value) and e.value.fix
    (tmp_path / "empty").mkdir()
    with pytest.raises(LeverError, match="config.json"):
        resolve_model(str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LeverError) as e:
        resolve_model("no-such-org-lever/no-such-model-lever")
    assert "HF_HUB_OFFLINE" in str(e.value) and "\n" not in str(e.value)


def test_hub_follows_hf_hub_offline(monkeypatch):
    """Hugging Face's convention: the hub is allowed unless HF_HUB_OFFLINE is 1 (or ON/YES/TRUE)."""
    import huggingface_hub

    calls = []

    def fake_snapshot_download(name, allow_patterns=None, local_files_only=False):
        calls.append(local_files_only)
        raise OSError("no network in tests")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    for value, offline in (("1", True), ("TRUE", True), ("on", True), ("0", False), ("", False), (None, False)):
        if value is None:
            monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        else:
            monkeypatch.setenv("HF_HUB_OFFLINE", value)
        with pytest.raises(LeverError) as e:
            resolve_model("some-org/some-model")
        assert calls[-1] is offline
        assert ("HF_HUB_OFFLINE" in e.value.fix) is offline


@pytest.mark.parametrize("which,max_len", [("default", 20), ("tiny", 24)])
def test_matches_sentence_transformers(which, max_len, tiny_model):
    from sentence_transformers import SentenceTransformer

    path = resolve_model("default") if which == "default" else str(tiny_model)
    ours = Encoder(path, max_len, device="cpu").encode(TEXTS, batch_size=7, progress=False)
    st = SentenceTransformer(path, device="cpu")
    st.max_seq_length = max_len
    theirs = st.encode(TEXTS, normalize_embeddings=True, batch_size=5, convert_to_numpy=True)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_order_and_batch_size_do_not_matter(tiny_model):
    enc = Encoder(str(tiny_model), 32, device="cpu")
    a = enc.encode(TEXTS, batch_size=3, progress=False)
    b = enc.encode(TEXTS, batch_size=64, progress=False)
    np.testing.assert_allclose(a, b, atol=1e-5)
    single = np.stack([enc.encode([t], progress=False)[0] for t in TEXTS[:5]])
    np.testing.assert_allclose(a[:5], single, atol=1e-5)
    assert enc.encode([], progress=False).shape == (0, 32)


class _Counting:
    """Patches Encoder.encode to record what it was asked to encode."""

    def __init__(self, monkeypatch):
        self.calls: list[list[str]] = []
        orig = Encoder.encode

        def encode(enc, texts, *a, **k):
            self.calls.append(list(texts))
            return orig(enc, texts, *a, **k)

        monkeypatch.setattr(Encoder, "encode", encode)

    @property
    def encoded(self) -> list[str]:
        return [t for c in self.calls for t in c]


def test_embed_cached_encodes_only_new_texts(tmp_path, tiny_model, monkeypatch):
    direct = Encoder(str(tiny_model), 16, device="cpu").encode(TEXTS, progress=False)
    count = _Counting(monkeypatch)
    cache = tmp_path / "cache"
    first = embed_cached(TEXTS[:12] + TEXTS[:3], str(tiny_model), 16, cache, device="cpu", progress=False)
    assert sorted(count.encoded) == sorted(TEXTS[:12])  # duplicates encoded once
    np.testing.assert_allclose(first, np.concatenate([direct[:12], direct[:3]]), atol=1e-5)

    count.calls.clear()
    again = embed_cached(TEXTS[:12], str(tiny_model), 16, cache, device="cpu", progress=False)
    assert count.calls == []
    np.testing.assert_array_equal(again, first[:12])

    # A superset, shuffled: only the new texts are encoded, rows come back in the caller's order.
    perm = np.random.default_rng(0).permutation(len(TEXTS))
    shuffled = [TEXTS[i] for i in perm]
    out = embed_cached(shuffled, str(tiny_model), 16, cache, device="cpu", progress=False)
    assert sorted(count.encoded) == sorted(TEXTS[12:])
    np.testing.assert_allclose(out, direct[perm], atol=1e-5)
    assert not list(cache.rglob("*.tmp*"))


def test_embed_cached_misses_on_other_max_len_or_model(tmp_path, tiny_model, monkeypatch):
    count = _Counting(monkeypatch)
    cache = tmp_path / "cache"
    embed_cached(TEXTS[:4], str(tiny_model), 16, cache, device="cpu", progress=False)
    embed_cached(TEXTS[:4], str(tiny_model), 8, cache, device="cpu", progress=False)
    assert len(count.calls) == 2
    # The same weights in another folder (another venv) share the cache; touching a file does not matter.
    import shutil

    other = tmp_path / "copy"
    shutil.copytree(tiny_model, other)
    w = other / "model.safetensors"
    os.utime(w, ns=(w.stat().st_atime_ns, w.stat().st_mtime_ns + 10**9))
    embed_cached(TEXTS[:4], str(other), 16, cache, device="cpu", progress=False)
    assert len(count.calls) == 2
    # Rewriting the weights (as a training run's save_pretrained does) changes the model identity.
    before = encmod.model_identity(other)
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    assert encmod.model_identity(other) != before
    embed_cached(TEXTS[:4], str(other), 16, cache, device="cpu", progress=False)
    assert len(count.calls) == 3


def test_cache_ignores_orphan_and_broken_shards(tmp_path, tiny_model):
    cache = tmp_path / "cache"
    ref = embed_cached(TEXTS[:4], str(tiny_model), 16, cache, device="cpu", progress=False)
    folder = next(p for p in cache.iterdir() if p.is_dir())
    # A crash between the two files of a shard leaves an .emb.npy without .hash.npy: ignored.
    np.save(folder / "0000-orphan.emb.npy", np.ones((4, 32), dtype=np.float32))
    # A hash file whose embeddings have another row count: ignored too.
    np.save(folder / "0000-bad.emb.npy", np.ones((1, 32), dtype=np.float32))
    np.save(folder / "0000-bad.hash.npy", encmod.text_hashes(TEXTS[:4]))
    out = embed_cached(TEXTS[:4], str(tiny_model), 16, cache, device="cpu", progress=False)
    np.testing.assert_array_equal(out, ref)


def test_cache_drops_a_shard_whose_bytes_changed(tmp_path, tiny_model, monkeypatch):
    """A flipped byte in a cached .emb.npy still loads as numbers; its checksum catches it, and those texts
    are encoded again instead of silently feeding a wrong feature to both arms."""
    cache = tmp_path / "cache"
    ref = embed_cached(TEXTS[:6], str(tiny_model), 16, cache, device="cpu", progress=False)
    (emb,) = cache.rglob("*.emb.npy")
    raw = bytearray(emb.read_bytes())
    raw[-5] ^= 0x01  # inside the last row's data
    emb.write_bytes(bytes(raw))
    assert not np.array_equal(np.load(emb), ref)  # loads fine, wrong values
    count = _Counting(monkeypatch)
    out = embed_cached(TEXTS[:6], str(tiny_model), 16, cache, device="cpu", progress=False)
    assert sorted(count.encoded) == sorted(TEXTS[:6])
    np.testing.assert_array_equal(out, ref)
    count.calls.clear()
    embed_cached(TEXTS[:6], str(tiny_model), 16, cache, device="cpu", progress=False)
    assert count.calls == []  # the re-encoded shard is used from then on


def test_cpu_bf16_encoding_is_close_to_float32_and_cached_apart(tmp_path, tiny_model, monkeypatch):
    """``amp`` on a CPU with AMX encodes under bf16 autocast: the rows stay within bf16 rounding of the
    float32 ones, and they live in their own cache folder, so a float32 run never reads bf16 rows (and the
    float32 folder keeps the name it had before precisions were told apart)."""
    import hashlib

    monkeypatch.setattr(encmod, "cpu_bf16_fast", lambda: True)  # emulated bf16 is correct, only slower
    fp32 = Encoder(str(tiny_model), 24, device="cpu").encode(TEXTS, progress=False)
    enc = Encoder(str(tiny_model), 24, device="cpu", amp=True)
    assert enc.precision == "bf16"
    bf16 = enc.encode(TEXTS, progress=False)
    cos = np.sum(fp32 * bf16, axis=1)
    assert cos.min() > 0.99 and not np.allclose(fp32, bf16, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)

    cache = tmp_path / "cache"
    a = embed_cached(TEXTS[:5], str(tiny_model), 24, cache, device="cpu", progress=False, amp=True)
    b = embed_cached(TEXTS[:5], str(tiny_model), 24, cache, device="cpu", progress=False)
    # bf16 rounding depends a little on the batch's padding width: near the bf16 rows, far from float32
    assert np.abs(a - bf16[:5]).max() < 0.5 * np.abs(a - fp32[:5]).max()
    np.testing.assert_allclose(b, fp32[:5], atol=1e-5)
    folders = sorted(p for p in cache.iterdir() if p.is_dir())
    assert len(folders) == 2
    meta = {json.loads((f / "meta.json").read_text())["precision"]: f.name for f in folders}
    old = hashlib.sha256(json.dumps([encmod.model_identity(str(tiny_model)), 24, "mean", "l2"]).encode())
    assert meta["fp32"] == old.hexdigest()[:16] and meta["bf16"] != meta["fp32"]
    monkeypatch.setattr(encmod, "cpu_bf16_fast", lambda: False)  # no AMX: amp changes nothing on CPU
    assert Encoder(str(tiny_model), 24, device="cpu", amp=True).precision == "fp32"


def test_stage_keys_see_the_feature_precision(monkeypatch):
    from lever_plugins.config import RunConfig
    from lever_plugins.stages import encoder_key

    cfg = RunConfig()
    monkeypatch.setattr(encmod, "cpu_bf16_fast", lambda: False)
    plain = encoder_key(cfg)
    assert "amp" not in plain and "precision" not in plain  # float32 runs keep their keys
    monkeypatch.setattr(encmod, "cpu_bf16_fast", lambda: True)
    assert encoder_key(cfg)["precision"] == "bf16"
    cfg.encoder.amp = False
    assert encoder_key(cfg) == plain
