"""Configuration: presets validate, overrides apply with YAML typing, and every mistake names its key path."""

import subprocess
import sys

import pytest

from pipeline.config import CONFIG_DIR, REPO_ROOT, Config, load_config
from pipeline.schema import ConfigError


def test_default_preset_is_the_embedded_cpu_run():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.models.policy.path == "tiny" and cfg.models.reward.path == "tiny"
    assert cfg.ray.num_gpus == 0 and cfg.rollout.num_gpus == 0
    assert cfg.logging.wandb.mode == "offline"


def test_every_preset_in_configs_validates():
    presets = sorted(CONFIG_DIR.glob("*.yaml"))
    assert presets, "configs/ has no presets"
    for preset in presets:
        load_config(preset)


def test_overrides_are_typed_like_yaml():
    cfg = load_config(None, ["run.total_steps=7", "rollout.sampling.temperature=0.5", "ray.address=null",
                             "run.name=123", "logging.wandb.tags=[a, b]"])
    assert cfg.run.total_steps == 7
    assert cfg.rollout.sampling.temperature == 0.5
    assert cfg.ray.address is None
    assert cfg.run.name == "123"  # a number given for a string field is kept as its text
    assert cfg.logging.wandb.tags == ["a", "b"]


def test_later_override_wins():
    assert load_config(None, ["run.seed=1", "run.seed=2"]).run.seed == 2


@pytest.mark.parametrize(
    "override, expected_in_message",
    [
        ("no.such.key=1", "no.such.key"),
        ("run.totl_steps=3", "did you mean 'total_steps'"),
        ("run.total_steps.x=3", "run.total_steps.x"),
        ("models.policy.tiny.text.hidden=8", "models.policy.tiny.text.hidden"),
    ],
)
def test_unknown_keys_name_their_path(override, expected_in_message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expected_in_message in str(err.value)


@pytest.mark.parametrize(
    "override, path",
    [
        ("run.total_steps=abc", "run.total_steps"),
        ("run.total_steps=-1", "run.total_steps"),
        ("logging.wandb.mode=sometimes", "logging.wandb.mode"),
        ("rollout.sampling.top_p=1.5", "rollout.sampling.top_p"),
        ("models.policy=3", "models.policy"),
    ],
)
def test_wrong_types_name_their_path(override, path):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert path in str(err.value)


def test_malformed_override_and_missing_file():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["run.total_steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/preset.yaml")


def test_unknown_key_inside_a_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  total_steps: 2\n  sede: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "run.sede" in str(err.value) and str(bad) in str(err.value)


def test_preset_by_name():
    assert load_config("default").run.name == load_config().run.name


def test_main_rejects_unknown_key_before_starting_anything():
    # The contract from issue #2: exit non-zero and name the key, without starting Ray.
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipeline" / "main.py"), "no.such.key=1"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    assert proc.returncode == 2
    assert "no.such.key" in proc.stderr
    assert "Ray instance" not in proc.stderr  # it failed before connecting to Ray


def test_partial_sections_keep_their_parents_specific_defaults():
    # tables' reward sampling defaults to greedy (paper); overriding only its token budget must keep that
    cfg = load_config(None, ["reward.tasks.table.sampling.max_new_tokens=77"])
    assert cfg.reward.tasks.table.sampling.max_new_tokens == 77
    assert cfg.reward.tasks.table.sampling.temperature == 0.0
    assert cfg.reward.tasks.chart.sampling.temperature == 0.0  # default.yaml: the tiny critic answers greedily
    assert cfg.reward.tasks.chart.sampling.max_new_tokens == 2100  # ...and keeps default.yaml's budget


def test_trainer_temperature_follows_the_rollout():
    assert load_config(None, ["rollout.sampling.temperature=0.6"]).trainer.temperature == 0.6
    assert load_config(None, ["rollout.sampling.temperature=0"]).trainer.temperature == 1.0  # greedy
    with pytest.raises(ConfigError, match="trainer.temperature"):
        load_config(None, ["rollout.sampling.temperature=0.6", "trainer.temperature=1.0"])


@pytest.mark.parametrize("overrides, expected", [
    (["trainer.ranks=2"], "do not split evenly"),  # 12 samples → 6 per rank, micro-batch 4
    (["trainer.mini_batch_size=5"], "do not split evenly"),
    (["rollout.vllm.enable_sleep_mode=true"], "stream.max_staleness=0"),
])
def test_combinations_that_would_fail_late_are_refused_at_load(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(None, overrides)
    # ... and a consistent combination across the same keys loads.
    load_config(None, ["trainer.ranks=2", "trainer.micro_batch_size_per_device=2", "trainer.mini_batch_size=4"])
