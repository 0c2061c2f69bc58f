"""``--set section.key=value``: typed like TOML, reaches the config, one-line errors; ``--grid`` parsing."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from conftest import lever

from lever_plugins import config as cfgmod
from lever_plugins.errors import ConfigError


def _captured_config(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> cfgmod.RunConfig:
    """Run ``lever train ARGS`` in-process with the pipeline replaced by a recorder of its config."""
    import lever_cli.main as climain

    from lever_plugins import pipeline

    seen: list[cfgmod.RunConfig] = []

    def fake_train_one(cfg, out, lever=True, log=print):
        seen.append(cfg)
        return {"P@1": 0.5}

    monkeypatch.setattr(pipeline, "train_one", fake_train_one)
    with pytest.raises(SystemExit) as exc:
        climain.main(["train", "--out", "unused", *args])
    assert exc.value.code == 0
    (cfg,) = seen
    return cfg


def test_set_values_are_typed_and_reach_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('seed = 5\n[trainer]\nl2 = 1e-5\nsolver = "lbfgs"\nnegatives = "full"\n')
    cfg = _captured_config(monkeypatch, [
        "--config", str(cfg_file),
        "--set", "trainer.l2=3e-6", "--set", "soft_labels.tau_d=10", "--set", "encoder.tfidf=true",
        "--set", "eval.k=[1, 10]", "--set", "data.name=my data", "--set", "trainer.solver=sgd",
        "--set", 'teacher.loss="logistic"', "--set", "trainer.options={ threads = 2 }", "--set", "seed=14",
    ])  # fmt: skip
    assert cfg.trainer.l2 == 3e-6 and isinstance(cfg.trainer.l2, float)
    assert cfg.soft_labels.tau_d == 10 and type(cfg.soft_labels.tau_d) is int
    assert cfg.encoder.tfidf is True
    assert cfg.eval.k == [1, 10]
    assert cfg.data.name == "my data"  # not TOML: the bare string
    assert cfg.trainer.solver == "sgd" and cfg.teacher.loss == "logistic"
    assert cfg.trainer.options == {"threads": 2}
    assert cfg.seed == 14
    assert cfg.trainer.negatives == "full"  # untouched keys keep the file's values


def test_later_set_wins_and_dedicated_flags_win_over_set(monkeypatch: pytest.MonkeyPatch):
    cfg = _captured_config(monkeypatch, ["--set", "seed=1", "--set", "seed=2", "--seed", "3",
                                         "--set", "trainer.epochs=4", "--set", "trainer.epochs=6"])  # fmt: skip
    assert cfg.seed == 3 and cfg.trainer.epochs == 6
    # an int where a float is expected is accepted as TOML would (1 -> 1.0)
    cfg = _captured_config(monkeypatch, ["--set", "soft_labels.threshold=1"])
    assert cfg.soft_labels.threshold == 1.0


def test_every_command_with_config_takes_set():
    from lever_cli import wrap  # noqa: F401  (registers wrap)
    from lever_cli.main import cli

    def walk(group: click.Group, path: str):
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                yield from walk(cmd, f"{path} {name}")
            else:
                yield f"{path} {name}", cmd

    with_config = [(p, c) for p, c in walk(cli, "lever") if any(o.name == "config" for o in c.params)]
    assert {p for p, _ in with_config} >= {"lever ab", "lever train", "lever teach", "lever soften", "lever wrap"}
    for path, cmd in with_config:
        opt = next((o for o in cmd.params if o.name == "sets"), None)
        assert opt is not None and opt.multiple and "--set" in opt.opts, path


@pytest.mark.parametrize(
    "item, needle",
    [
        ("trainer.l2=abc", "expected a number, got str 'abc'"),
        ("trainer.epoch=3", "unknown key 'epoch'"),
        ("trainer.l2", "is not section.key=value"),
        ("a.b.c=1", "is not section.key=value"),
        ("soft_labels.threshold=2", "must be in [0, 1]"),
        ("trainer.solver=adam", "is not one of sgd, lbfgs"),
    ],
)
def test_bad_set_is_one_line_exit_2_nothing_written(tmp_path: Path, item: str, needle: str):
    out = tmp_path / "run"
    r = lever("train", "--data", str(tmp_path / "nodata"), "--out", str(out), "--set", item)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert needle in lines[0] and "command line" in lines[0]
    assert not out.exists()


def test_parse_helpers():
    assert cfgmod.parse_sets(["trainer.l2=1e-6", "seed=3", "eval.k=[1,3]"]) == {
        "trainer": {"l2": 1e-6}, "seed": 3, "eval": {"k": [1, 3]}}  # fmt: skip
    assert cfgmod.parse_grid("soft_labels.tau_d=5,10, 20") == ("soft_labels.tau_d", [5, 10, 20])
    assert cfgmod.parse_grid("eval.k=[1,3],[1,5]") == ("eval.k", [[1, 3], [1, 5]])
    assert cfgmod.parse_grid('data.name="a,b",c') == ("data.name", ["a,b", "c"])
    with pytest.raises(ConfigError):
        cfgmod.parse_grid("trainer.l2=")
    flat = {"trainer.l2": 1e-5, "trainer.options": {"a": 1}, "seed": 2}
    assert cfgmod.flatten(cfgmod.nest(flat)) == flat
