"""Tables a paper can take: compare.{md,csv,tex} follow [eval] k and parse back to metrics.json; LaTeX is
booktabs with escaped names; --seeds aggregates mean ± sd; decile plots in three formats with distinct
titles; the Python API returns what the CLI writes."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import lever

import lever_plugins as lever_api
from lever_plugins import report

TINY = """
seed = 3
[encoder]
max_len = 16
[teacher]
train = false
[soft_labels]
tau_l = 3
tau_d = 4
threshold = 0.7
[trainer]
epochs = 3
batch_size = 32
negatives = "full"
lr = 0.05
[eval]
bootstrap = 40
k = [1, 10]
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("LEVER_CACHE_DIR", str(tmp_path / "cache"))
    return {"LEVER_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def _metrics(folder: Path, arm: str) -> dict[str, float]:
    return json.loads((folder / arm / "metrics.json").read_text())


def _tex_rows(tex: str) -> list[str]:
    body = tex.split("\\midrule\n")[1].split("\\bottomrule")[0]
    return [r for r in body.splitlines() if r.strip()]


def _check_tex(tex: str, n_cols: int) -> None:
    """Structure a LaTeX compile would need: booktabs rules in order, balanced environments, every row with
    the tabular's column count, no unescaped special character outside math and commands."""
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    for env_name in ("table", "tabular"):
        assert tex.count(f"\\begin{{{env_name}}}") == tex.count(f"\\end{{{env_name}}}") == 1
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1)
    assert len(spec) == n_cols
    header = tex.split("\\toprule\n")[1].split("\\midrule")[0].strip()
    for row in [header, *_tex_rows(tex)]:
        assert row.endswith("\\\\")
        assert len(re.split(r"(?<!\\)&", row[:-2])) == n_cols, row
        assert not re.search(r"(?<!\\)[%#_]", row), row  # specials escaped
        assert row.count("$") % 2 == 0 and not re.search(r"(?<!\\)\$\$", row)
    assert tex.count("{") - tex.count("\\{") == tex.count("}") - tex.count("\\}")  # braces balance


def test_tables_follow_eval_k_and_parse_back(tmp_path: Path, tiny_lf: Path, env: dict[str, str], one_torch_thread):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    out = tmp_path / "cli"
    r = lever("ab", "--data", str(tiny_lf), "--out", str(out), "--config", str(cfg), env=env)
    assert r.returncode == 0, r.stderr
    stage_line = r"time per stage: data [\d.]+s, features [\d.]+s, .*train_base [\d.]+s.*train_lever [\d.]+s"
    assert re.search(stage_line, r.stdout), r.stdout
    want = ["P@1", "P@10", "PSP@1", "PSP@10", "C@10", "macroF1@10"]
    md = (out / "compare.md").read_text()
    metric_rows = [line for line in md.splitlines() if re.match(r"\| [A-Za-z]+1?@\d+ \|", line)]
    assert [line.split("|")[1].strip() for line in metric_rows] == want
    assert "P@3" not in md and "P@5" not in md
    assert "Seed: 3" in md and "60 train documents" in md and "20 test documents" in md and "tau_l = 3" in md

    # CSV: the numbers of metrics.json, to the last digit; delta and interval consistent
    base, lev = _metrics(out, "base"), _metrics(out, "lever")
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert [row["metric"] for row in rows] == want
    for row in rows:
        m = row["metric"]
        assert float(row["base"]) == base[m] and float(row["lever"]) == lev[m]
        assert float(row["delta"]) == pytest.approx(lev[m] - base[m], abs=1e-15)
        assert float(row["ci_lo"]) <= float(row["ci_hi"])

    tex = (out / "compare.tex").read_text()
    _check_tex(tex, 4)
    assert [row.split("&")[0].strip() for row in _tex_rows(tex)] == want
    assert f"& {100 * lev['PSP@10']:.2f} &" in _tex_rows(tex)[3]

    # decile plots at the largest k (5 is not evaluated): PNG, PDF, SVG; distinct titles (SVG keeps its text)
    for stem in ("deciles", "deciles_labels"):
        assert (out / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    titles = [re.findall(r"P@10 by train-frequency bin \(([^)]*)\)", (out / f"{s}.svg").read_text())
              for s in ("deciles", "deciles_labels")]  # fmt: skip
    assert len(titles[0]) == len(titles[1]) == 1 and titles[0] != titles[1]
    assert not list((out / ".lever" / "tmp").iterdir())  # every artefact renamed into place

    # The Python API, in a fresh folder: the same numbers as the CLI's metrics.json
    res = lever_api.ab(data=tiny_lf, out=tmp_path / "api", config=cfg, log=None)
    assert res.metrics["base"] == pytest.approx(base, rel=1e-9, abs=1e-12)
    assert res.metrics["lever"] == pytest.approx(lev, rel=1e-9, abs=1e-12)
    assert "| P@10 |" in res.table and "P@3" not in res.table


def test_seeds_aggregate_is_mean_and_sd_of_per_seed_metrics(tmp_path: Path, tiny_lf: Path, env, one_torch_thread):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    out = tmp_path / "seeds"
    res = lever_api.ab(data=tiny_lf, out=out, config=cfg, seeds="3,4,5", log=None)
    names = list(report.table_metrics([1, 10]))
    per = {s: {a: _metrics(out / f"seed-{s}", a) for a in ("base", "lever")} for s in (3, 4, 5)}
    assert {a: json.loads((out / f"seed-{s}" / "manifest.json").read_text())["config"]["seed"]
            for a, s in zip("xyz", (3, 4, 5), strict=True)} == {"x": 3, "y": 4, "z": 5}  # fmt: skip
    rows = {row["metric"]: row for row in csv.DictReader((out / "compare.csv").open())}
    assert list(rows) == names
    for m in names:
        for arm in ("base", "lever"):
            v = np.array([per[s][arm][m] for s in (3, 4, 5)])
            assert float(rows[m][f"{arm}_mean"]) == pytest.approx(np.mean(v), abs=1e-15)
            assert float(rows[m][f"{arm}_sd"]) == pytest.approx(np.std(v, ddof=1), abs=1e-15)
            assert res.aggregate[arm][m]["mean"] == pytest.approx(np.mean(v), abs=1e-15)
        d = np.array([per[s]["lever"][m] - per[s]["base"][m] for s in (3, 4, 5)])
        assert float(rows[m]["delta_sd"]) == pytest.approx(np.std(d, ddof=1), abs=1e-15)
        # next to the first seed's bootstrap interval
        first = {row["metric"]: row for row in csv.DictReader((out / "seed-3" / "compare.csv").open())}
        assert rows[m]["ci_lo"] == first[m]["ci_lo"] and rows[m]["ci_hi"] == first[m]["ci_hi"]
    saved = json.loads((out / "seeds.json").read_text())["metrics"]
    assert saved == {str(s): per[s] for s in (3, 4, 5)}
    md = (out / "compare.md").read_text()
    m = names[2]
    mean, sd = res.aggregate["lever"][m]["mean"], res.aggregate["lever"][m]["sd"]
    assert f"{100 * mean:.2f} ± {100 * sd:.2f}" in md and "Seeds: 3, 4, 5" in md
    _check_tex((out / "compare.tex").read_text(), 5)
    assert "\\pm" in (out / "compare.tex").read_text()


def test_latex_escapes_names_and_extra_columns():
    boot = {"P@1": {"a": 0.5, "b": 0.6, "delta": 0.1, "lo": 0.05, "hi": 0.15, "confidence": 0.9, "n_boot": 10}}
    t = report.Table(title="run on my_data & co", header=["50% of #1 {x} ~y^ \\z"], boot=boot,
                     extra={"label_rows (N+L) & 100%": {"P@1": 0.25}})  # fmt: skip
    tex = t.latex()
    _check_tex(tex, 5)
    assert r"label\_rows (N+L) \& 100\%" in tex and r"my\_data \& co" in tex
    assert r"50\% of \#1 \{x\} \textasciitilde{}y\textasciicircum{} \textbackslash{}z" in tex
    assert r"$\Delta$ [90\% CI]" in tex and "& 25.00 \\\\" in tex
    assert list(csv.reader(t.csv().splitlines()))[0][-1] == "label_rows (N+L) & 100%"


@pytest.mark.parametrize("slice_", [{"data.max_train": 40, "data.max_test": 12}, {"data.holdout": 0.25}])
def test_sliced_run_saves_rows_and_lever_eval_reproduces_metrics(tmp_path: Path, tiny_lf: Path, env, slice_,
                                                                 one_torch_thread):
    import scipy.sparse as sp

    from lever_plugins.data import load_dataset

    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    out = tmp_path / "run"
    lever_api.ab(data=tiny_lf, out=out, config=cfg, overrides={**slice_, "eval.bootstrap": 5}, log=None)
    rows = json.loads((out / "rows.json").read_text())
    ds = load_dataset(tiny_lf)  # the whole split files
    sp.save_npz(tmp_path / "trn.npz", ds.y_trn)
    sp.save_npz(tmp_path / "tst.npz", ds.y_tst)
    truth = tmp_path / ("trn.npz" if "data.holdout" in slice_ else "tst.npz")
    assert rows["test"]["split"] == ("train" if "data.holdout" in slice_ else "test")
    assert len(rows["test"]["rows"]) == sp.load_npz(out / "lever" / "scores.npz").shape[0]
    r = lever("eval", "--scores", str(out / "lever" / "scores.npz"), "--truth", str(truth), "--train",
              str(tmp_path / "trn.npz"), "--rows", str(out / "rows.json"), "-k", "1", "-k", "10",
              "--out", str(tmp_path / "m.json"), env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m.json").read_text()) == pytest.approx(_metrics(out, "lever"), abs=1e-12)
    # without --rows the shapes disagree: one line, exit 2
    r = lever("eval", "--scores", str(out / "lever" / "scores.npz"), "--truth", str(truth), env=env)
    assert r.returncode == 2 and "shape" in r.stderr and len(r.stderr.strip().splitlines()) == 1
