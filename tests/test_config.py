"""Config: typed TOML, unknown keys with suggestions, wrong types; all one-line errors, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import lever

from lever_plugins import config
from lever_plugins.errors import ConfigError


def test_defaults_and_overrides(tmp_path: Path):
    p = tmp_path / "c.toml"
    p.write_text("seed = 7\n[soft_labels]\ntau_l = 6\nthreshold = 0.75\n[eval]\nk = [1, 5]\n")
    cfg = config.load(p, {"trainer": {"epochs": 3}})
    assert cfg.seed == 7 and cfg.soft_labels.tau_l == 6 and cfg.soft_labels.threshold == 0.75
    assert cfg.eval.k == [1, 5] and cfg.trainer.epochs == 3
    assert cfg.teacher.loss == "triplet"  # untouched default


def test_int_accepted_for_float(tmp_path: Path):
    p = tmp_path / "c.toml"
    p.write_text("[soft_labels]\nthreshold = 1\n")
    assert config.load(p).soft_labels.threshold == 1.0


@pytest.mark.parametrize(
    "body, needle",
    [
        ("[soft_labels]\ntau = 4\n", "unknown key 'tau'"),
        ("[soft_labels]\nthreshhold = 0.8\n", "did you mean 'threshold'"),
        ("[teacher]\nepochs = 'three'\n", "expected an integer"),
        ("[teacher]\nloss = 'hinge'\n", "teacher.loss = 'hinge' is not one of triplet, logistic"),
        ("[soft_labels]\nblend_lambda = 1.5\n", "blend_lambda = 1.5 must be in [0, 1]"),
        ("[trainer]\nfinetune = 1\n", "expected true or false"),
        ("[trainer]\nencoder_warmup = 1.5\n", "trainer.encoder_warmup = 1.5 must be in [0, 1]"),
        ("[sfot_labels]\n", "did you mean 'soft_labels'"),
        ("seed = [\n", "invalid TOML"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, body: str, needle: str):
    p = tmp_path / "c.toml"
    p.write_text(body)
    with pytest.raises(ConfigError) as exc:
        config.load(p)
    assert needle in exc.value.line()
    assert str(p) in exc.value.line()


def test_config_hash_changes_with_settings():
    a, b = config.RunConfig(), config.RunConfig()
    assert config.config_hash(a.soft_labels) == config.config_hash(b.soft_labels)
    b.soft_labels.tau_l = 5
    assert config.config_hash(a.soft_labels) != config.config_hash(b.soft_labels)


def test_cli_config_errors_exit_2_without_traceback(tmp_path: Path, tiny_lf: Path):
    p = tmp_path / "c.toml"
    p.write_text("[soft_labels]\ntau = 4\n")
    out = tmp_path / "run"
    r = lever("ab", "--data", str(tiny_lf), "--out", str(out), "--config", str(p))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "unknown key 'tau'" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()  # nothing written before the config is known good
    r = lever("ab", "--data", str(tiny_lf), "--out", str(out), "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "config file not found" in r.stderr
