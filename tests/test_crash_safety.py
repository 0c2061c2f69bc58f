"""Crash safety, determinism and concurrency of real ``lever`` processes (CPU, fixed seed, tiny model and data).

Kills are deterministic: ``LEVER_TEST_CRASH_AT=<point>`` makes the process SIGKILL itself at a named point
and ``LEVER_TEST_STOP_AT=<point>`` makes it SIGSTOP itself there (lever_plugins/faults.py lists the points).
Every scenario is compared against one uninterrupted reference run of the same command.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import lever, write_tiny_lf

ARTEFACTS = ["teacher/embeddings.npz", "soft/y_aug.npz", "soft/soft.npz", "soft/targets.npz", "lever/scores.npz"]

CONFIG = """\
seed = 5
[encoder]
model = "{model}"
max_len = 16
[teacher]
model = "{model}"
train = true
epochs = 2
max_len = 16
batch_size = 4
warmup_steps = 1
cluster_size = 2
[soft_labels]
tau_l = 3
tau_d = 4
threshold = 0.5
[trainer]
epochs = 3
batch_size = 32
negatives = "full"
lr = 0.05
"""


# calibration = "auto" on this small dense run: chosen by two hold-out fits, stages of their own
CALIBRATION = ("train_calibration_linear", "train_calibration_sigmoid", "train_calibration_sigmoid_a20_c-12",
               "calibration_select")


@pytest.fixture(scope="module")
def setup(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("crash")
    data = write_tiny_lf(root / "data", n_trn=40, n_tst=16, n_lbl=12)
    cfg = root / "tiny.toml"
    cfg.write_text(CONFIG.format(model=tiny_model))
    env = {"LEVER_CACHE_DIR": str(root / "cache"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return {"root": root, "data": data, "cfg": cfg, "env": env}


def train(setup: dict, out: Path, crash: str | None = None, **env: str) -> subprocess.CompletedProcess:
    extra = {**setup["env"], **env}
    if crash:
        extra["LEVER_TEST_CRASH_AT"] = crash
    return lever("train", "--data", str(setup["data"]), "--out", str(out), "--config", str(setup["cfg"]), env=extra)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stages(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["stages"]


def temps(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if ".tmp" in p.name)


@pytest.fixture(scope="module")
def reference(setup: dict) -> dict:
    """One uninterrupted ``lever train`` (+LEVER arm): its metrics and artefact checksums."""
    out = setup["root"] / "reference"
    r = train(setup, out)
    assert r.returncode == 0, r.stderr
    return {
        "out": out,
        "metrics": json.loads((out / "lever" / "metrics.json").read_text()),
        "sha": {a: sha(out / a) for a in ARTEFACTS},
    }


def test_kill_9_at_each_stage_then_rerun_equals_uninterrupted(setup: dict, reference: dict) -> None:
    out = setup["root"] / "crashed"
    # 1. SIGKILL in the middle of teacher epoch 2 (3 batches per epoch: step 5 is the 2nd batch of epoch 2).
    r = train(setup, out, crash="teacher:step:5")
    assert r.returncode == -signal.SIGKILL
    import torch

    assert torch.load(out / "teacher" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (out / "manifest.json").exists()  # no stage finished
    assert not (out / "soft").exists() and not (out / "lever").exists()

    # 2. The re-run resumes the teacher from its epoch-1 checkpoint; SIGKILL after the soft labels are
    #    written but before the stage is recorded in manifest.json.
    r = train(setup, out, crash="stage:soft_labels:computed")
    assert r.returncode == -signal.SIGKILL
    st = stages(out)
    assert st["teacher"]["stats"]["resumed_from"] == 1 and st["teacher"]["stats"]["epochs_run"] == 1
    assert "soft_labels" not in st and (out / "soft" / "targets.npz").exists()
    teacher_rec = st["teacher"]

    # 3. The unfinished soft-label stage is recomputed (teacher cached); SIGKILL while the trainer's output
    #    is in its temp file, not yet renamed into place.
    r = train(setup, out, crash="write:lever/scores.npz")
    assert r.returncode == -signal.SIGKILL
    assert "[teacher]" in r.stdout and "(cached)" in r.stdout.split("[teacher]")[1].split("\n")[0]
    st = stages(out)
    assert st["teacher"] == teacher_rec and "soft_labels" in st and "train_lever" not in st
    assert not (out / "lever" / "scores.npz").exists() and temps(out)  # the killed write left a temp file

    # 4. A plain re-run: only the trainer runs (the calibration choice's hold-out fits before it finished
    #    too); the killed run's temp file is cleared; results are equal.
    r = train(setup, out)
    assert r.returncode == 0, r.stderr
    cached = [line.split("]")[0][1:] for line in r.stdout.splitlines() if line.endswith("(cached)")]
    assert set(cached) == {"teacher", "soft_labels", *CALIBRATION}
    assert temps(out) == []
    assert json.loads((out / "lever" / "metrics.json").read_text()) == reference["metrics"]
    assert {a: sha(out / a) for a in ARTEFACTS} == reference["sha"]

    # 5. Flip one byte in the middle of two artefacts: the manifest checksums catch it (before a reader
    #    could fail on it or, worse, use it) and only those two stages are rebuilt, to the same bytes.
    for art in ("teacher/embeddings.npz", "lever/scores.npz"):
        raw = bytearray((out / art).read_bytes())
        raw[len(raw) // 2] ^= 0x40
        (out / art).write_bytes(bytes(raw))
    r = train(setup, out)
    assert r.returncode == 0, r.stderr
    cached = {line.split("]")[0][1:] for line in r.stdout.splitlines() if line.endswith("(cached)")}
    assert cached == {"soft_labels", *CALIBRATION}
    assert {a: sha(out / a) for a in ARTEFACTS} == reference["sha"]
    assert json.loads((out / "lever" / "metrics.json").read_text()) == reference["metrics"]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def busy(setup: dict) -> dict:
    """Run A freezes itself (SIGSTOP) after its first teacher checkpoint, holding the run lock; run B is
    started on the same --out meanwhile; then A is continued to the end. A has its own embedding cache,
    so it is also a fully independent second run of the reference command."""
    out = setup["root"] / "busy"
    env = {**os.environ, **setup["env"], "LEVER_CACHE_DIR": str(setup["root"] / "cache2"),
           "LEVER_TEST_STOP_AT": "teacher:epoch:1"}  # fmt: skip
    cmd = [sys.executable, "-m", "lever_cli", "train", "--data", str(setup["data"]), "--out", str(out),
           "--config", str(setup["cfg"])]  # fmt: skip
    log = setup["root"] / "busy.log"  # a file, not a pipe: a full pipe would block A before its stop point
    with open(log, "w") as fh:
        a = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not _stopped(a.pid):
            assert a.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "run A never reached teacher:epoch:1"
            time.sleep(0.05)
        before = snapshot(out)
        b = train(setup, out)
        after = snapshot(out)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    a.wait(timeout=300)
    return {"out": out, "pid": a.pid, "a_rc": a.returncode, "a_err": log.read_text(), "b": b,
            "before": before, "after": after}  # fmt: skip


def test_second_run_on_a_busy_output_dir_refuses(busy: dict) -> None:
    b, out = busy["b"], busy["out"]
    assert "teacher/checkpoint.pt" in busy["before"]  # A was mid-run when B came
    assert b.returncode == 2
    assert b.stderr.strip() == (
        f"error: {out}: another lever process (pid {busy['pid']}) is using this output directory "
        "(wait for it to finish or choose another --out)"
    )
    assert busy["after"] == busy["before"]  # B wrote nothing at all: no interleaved writes
    assert busy["a_rc"] == 0, busy["a_err"]  # and A, continued, finished normally
    assert not (out / ".lever" / "lock").exists()


def test_same_config_and_seed_give_identical_bytes(busy: dict, reference: dict) -> None:
    """Run A (its own embedding cache, paused and continued) against the reference: byte-identical
    teacher embeddings, soft-label matrices and scores, equal metrics, equal manifest checksums."""
    out = busy["out"]
    assert busy["a_rc"] == 0, busy["a_err"]
    assert {a: sha(out / a) for a in ARTEFACTS} == reference["sha"]
    assert json.loads((out / "lever" / "metrics.json").read_text()) == reference["metrics"]
    for run in (out, reference["out"]):
        st = stages(run)
        assert st["soft_labels"]["sha256"] == {a: reference["sha"][a] for a in ARTEFACTS if a.startswith("soft/")}


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] == "T"


HOLD = """
import sys, time
from lever_plugins.runs import Run, RunLockedError
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
try:
    with Run(sys.argv[1]):
        print("got", flush=True)
        time.sleep(1.5)
except RunLockedError:
    print("refused", flush=True)
"""


def test_simultaneous_starts_exactly_one_wins(tmp_path: Path) -> None:
    """Processes released at the same instant (the stale-lock window included): exactly one gets the lock."""
    out = tmp_path / "run"
    for attempt in range(2):
        if attempt:  # a lock file left by a killed process must not change the outcome
            (out / ".lever").mkdir(parents=True, exist_ok=True)
            (out / ".lever" / "lock").write_text("999999")
        start = time.time() + 1.0
        procs = [
            subprocess.Popen([sys.executable, "-c", HOLD, str(out), str(start)], stdout=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        results = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
        assert results == ["got", "refused", "refused", "refused"]


# ------------------------------------------------------------------ issue 17: files, umask, disks, threads


USER_FILES = {  # names the old cleanup swept (".tmp"/".old-" inside a dot name, "*.lock"), whole folders too
    ".tmp/important.txt": b"keep me",
    ".notes.tmp.md": b"my notes",
    ".old-results/table.csv": b"a,b\n",
    "mine.lock": b"not lever's lock",
    "notes.tmp": b"plain",
}


def test_user_files_in_out_survive_a_crash_and_the_rerun(setup: dict, reference: dict) -> None:
    """Lever's temps and lock live in <out>/.lever: taking the lock and sweeping stale temps after a
    kill -9 touch nothing of the user's, whatever its name."""
    out = setup["root"] / "user-files"
    for rel, data in USER_FILES.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    crashed = train(setup, out, crash="stage:soft_labels:computed")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-500:]
    r = train(setup, out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {rel: (out / rel).read_bytes() for rel in USER_FILES} == USER_FILES
    assert sha(out / "lever/scores.npz") == reference["sha"]["lever/scores.npz"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_artefacts_honour_the_umask(tmp_path: Path, umask: int) -> None:
    """Files lever writes (temp + rename) get 0o666 & ~umask, as any program's, not a fixed 0600."""
    (tmp_path / "y.txt").write_text("2 3\n0:1\n1:1 2:0.5\n")
    out = tmp_path / "folder"
    env = {**os.environ, "LEVER_CACHE_DIR": str(tmp_path / "cache")}
    for argv in (["data", "convert", str(tmp_path / "y.txt"), str(tmp_path / "y.npz")],
                 ["data", "convert", str(write_tiny_lf(tmp_path / "lf", n_trn=6, n_tst=3, n_lbl=4)), str(out)]):
        r = subprocess.run([sys.executable, "-m", "lever_cli", *argv], capture_output=True, text=True, env=env,
                           preexec_fn=lambda: os.umask(umask), timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
    files = [tmp_path / "y.npz", *(p for p in out.rglob("*") if p.is_file())]
    assert len(files) > 3
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(0o666 & ~umask) for p in files}


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EROFS", "EACCES"])
def test_full_or_read_only_disk_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture, errno_name: str) -> None:
    """A write that the disk refuses (full, read-only, no permission) is the user's environment: one line
    naming the path and the cause, exit 2 (not the bug code 3, not a traceback), nothing left behind."""
    import errno

    from lever_cli.main import main

    (tmp_path / "y.txt").write_text("2 3\n0:1\n1:1 2:0.5\n")
    code = getattr(errno, errno_name)
    real_replace = os.replace

    def refuse(src, dst, *a, **kw):
        if str(dst).endswith("y.npz"):
            raise OSError(code, os.strerror(code), str(dst))
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", refuse)
    monkeypatch.delenv("LEVER_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["data", "convert", str(tmp_path / "y.txt"), str(tmp_path / "y.npz")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    assert "\n" not in err and "Traceback" not in err and err.startswith("error: "), err
    assert os.strerror(code) in err and "y.npz" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.txt"]  # no temp, no partial file


def test_soft_labels_identical_across_thread_counts_with_duplicate_label_texts() -> None:
    """Duplicate label texts give exactly tied neighbours; ties are broken by id, so the soft-label
    matrix is the same bytes with 1 or 2 threads (torch and faiss) — and equals the id-ordered oracle."""
    import faiss
    import numpy as np
    import scipy.sparse as sp
    import torch

    from lever_plugins.config import SoftLabelConfig
    from lever_plugins.soft_labels.augment import build_soft_labels

    rng = np.random.default_rng(0)
    base = rng.standard_normal((30, 16)).astype(np.float32)
    lbl = np.concatenate([base, base[:10], base[:10]])  # labels 30..49 duplicate labels 0..9 (same text)
    lbl /= np.linalg.norm(lbl, axis=1, keepdims=True)
    y = sp.random(60, 50, density=0.05, random_state=1, format="csr")
    y.data[:] = 1
    doc = (y @ lbl + 0.1 * rng.standard_normal((60, 16))).astype(np.float32)
    cfg = SoftLabelConfig(tau_l=2, tau_d=2, threshold=0.5, k=8, index="flat")  # one soft neighbour per label
    out = []
    t0, f0 = torch.get_num_threads(), faiss.omp_get_max_threads()
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            faiss.omp_set_num_threads(threads)
            s = build_soft_labels(y, doc, lbl, cfg)
            out.append((s.soft.indptr.tobytes(), s.soft.indices.tobytes(), s.soft.data.tobytes()))
    finally:
        torch.set_num_threads(t0)
        faiss.omp_set_num_threads(f0)
    assert out[0] == out[1] == out[2]
    # The oracle: labels 0, 30, 40 are one text (cosine 1): each label row's single soft neighbour is the
    # smallest id among its two tied twins.
    soft = sp.csr_matrix((np.frombuffer(out[0][2], np.float32), np.frombuffer(out[0][1], np.int32),
                          np.frombuffer(out[0][0], np.int32)), shape=(110, 50))  # fmt: skip
    for label, twin in ((0, 30), (30, 0), (40, 0), (1, 31), (41, 1)):
        assert list(soft[60 + label].indices) == [twin], (label, soft[60 + label])
