"""benchmarks/gpu_check.sh --cpu, reduced: the prepared GPU check runs here before device time is spent.

The full rehearsal (every step, toy sizes, ~5 min on 2 cores) is ``bash benchmarks/gpu_check.sh --cpu``;
CI runs the fast steps through the same shell entry point and checks the JSON they write, including that
the Renée check compares against autograd (its errors are small, not zero by construction) and that the
exact kNN found the true neighbours.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_rehearsal_reduced(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": str(Path(os.sys.executable))}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu", "--only",
                        "env,knn_exact,renee_backward", "--out", str(out), "--workdir", str(tmp_path / "w")],
                       capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["mode"] == "cpu" and set(res["steps"]) == {"env", "knn_exact", "renee_backward"}
    assert all(s["status"] == "ok" for s in res["steps"].values()), res
    knn = res["steps"]["knn_exact"]
    assert knn["recall_vs_numpy"] == 1.0 and knn["bare_matmul_seconds"] > 0
    ren = res["steps"]["renee_backward"]
    assert ren["fp32"]["grad_w_rel_err"] < 1e-4 and ren["fp16"]["grad_w_rel_err"] < 3e-2
    assert ren["fp16"]["amp_scale"] == 4096.0 and ren["fp16"]["in_place"]


def test_gpu_check_refuses_unknown_steps(tmp_path: Path) -> None:
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu", "--only", "nope"],
                       capture_output=True, text=True, env={**os.environ, "PYTHON": os.sys.executable}, timeout=120)
    assert r.returncode == 2 and "unknown steps: nope" in r.stderr
