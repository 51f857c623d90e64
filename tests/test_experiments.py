"""The reward ablation (pipeline/experiments): arm configs, the analysis of run logs, the reward-hacking probes,
and a fast variant of the whole command (1 seed, 2 arms, 2 updates) through the real driver."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.experiments import ablation, hacking
from pipeline.schema import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_arms_may_differ_only_in_reward_settings():
    cfg = ablation.AblationConfig(arms=[ablation.ArmConfig(name="sneaky", overrides=["run.total_steps=99"])])
    with pytest.raises(ConfigError, match="arm 'sneaky'.*not a reward setting"):
        ablation.arm_config(cfg, cfg.arms[0], 0)


def test_every_arm_gets_the_same_budget_and_its_own_reward(tmp_path):
    cfg = ablation.load_ablation_config(REPO / "configs" / "ablation" / "cpu.yaml", [f"out_dir={tmp_path}"])
    cfg = cfg.model_copy(update={"overrides": [*cfg.overrides, f"models.cache_dir={tmp_path}"]})
    runs = [ablation.arm_config(cfg, arm, seed) for arm in cfg.arms for seed in cfg.seeds]
    budgets = {(r.run.total_steps, r.data.prompts_per_step, r.rollout.sampling.n, r.rollout.sampling.max_new_tokens,
                r.data.synth_train_per_task) for r in runs}
    assert len(budgets) == 1
    terms = {r.run.name.rsplit("-s", 1)[0]: tuple(t.name for t in r.reward.formula.terms) for r in runs}
    assert terms["render"] == ("render_success",) and terms["ssim"] == ("render_success", "ssim")
    rewards = {r.run.name.rsplit("-s", 1)[0]: (terms[r.run.name.rsplit("-s", 1)[0]], r.reward.backend) for r in runs}
    assert len(set(rewards.values())) == len(cfg.arms)  # the two Visual-ERM arms differ in their critic
    assert rewards["visual_erm_oracle"][1] == "structural" and rewards["visual_erm_learned"][1] == "hf"
    assert {r.run.seed for r in runs} == set(cfg.seeds) and all(r.run.eval_at_start for r in runs)
    encoder = next(r for r in runs if "embedding" in r.run.name).reward.embedding.path
    assert (Path(encoder) / "config.json").is_file()  # a tiny random DINOv2, built offline


def _write_run(run_dir: Path, ssim_by_updates: dict[int, float]):
    run_dir.mkdir(parents=True)
    lines = [json.dumps({"step": 0, "train/version": 1})]  # training records are ignored
    lines += [json.dumps({"step": u, "eval/updates": u, "eval/svg/ssim": v}) for u, v in ssim_by_updates.items()]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_summary_is_before_and_after_over_seeds_and_flags_moves_beyond_the_spread(tmp_path):
    runs = {"up": {}, "flat": {}}
    for seed, (a, b) in enumerate([(0.50, 0.70), (0.52, 0.71)]):
        _write_run(tmp_path / f"up-{seed}", {0: a, 4: (a + b) / 2, 8: b})
        runs["up"][seed] = tmp_path / f"up-{seed}"
    for seed, (a, b) in enumerate([(0.50, 0.55), (0.56, 0.50)]):
        _write_run(tmp_path / f"flat-{seed}", {0: a, 8: b})
        runs["flat"][seed] = tmp_path / f"flat-{seed}"
    summary = ablation.summarize(runs, ["svg"])
    up, flat = summary["table"]["up"]["svg"]["ssim"], summary["table"]["flat"]["svg"]["ssim"]
    assert up["before"] == pytest.approx(0.51) and up["after"] == pytest.approx(0.705) and up["seeds"] == 2
    assert ablation.moved_beyond_spread(up) and not ablation.moved_beyond_spread(flat)
    assert summary["curves"]["up"]["svg/ssim"][4] == pytest.approx([0.6, 0.615])
    text = ablation.format_table(summary, ["svg"])
    assert "| up | 0.510±0.010 → 0.705±0.005 (Δ +0.195*)" in text
    ablation.plot_curves(summary, ["svg"], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 5000


def test_probe_programs():
    chart = "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.bar([1], [2])\nax.set_title('Sales 2024')"
    assert hacking.title_only(chart) == "import matplotlib.pyplot as plt\nplt.title('Sales 2024')"
    html = "<table><tr><th>City</th><th>Pop</th></tr><tr><td>Oslo</td><td>0.7</td></tr></table>"
    assert hacking.text_dump(html) == "City Pop Oslo 0.7"
    assert hacking.text_dump("| A | B |\n|---|---|\n| 1 | 2 |") == "A B 1 2"


def test_a_raster_copy_fools_pixel_rewards():
    """The SVG that only embeds the reference image renders as the reference: SSIM and MSE rewards give it the
    top score, exactly what the hacking table must reveal."""
    from pipeline.critic.config import RewardConfig
    from pipeline.critic.scorer import RewardScorer
    from pipeline.data.loader import Prompt
    from pipeline.render import render

    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><circle cx="32" cy="32" r="20" fill="red"/></svg>'
    reference = render("svg", svg).image
    prompt = Prompt("svg", reference, [], svg, "probe#0")
    samples = hacking.probe_samples([prompt], 1, lambda kind, code: render(kind, code))
    assert [s.extra["probe"] for s in samples] == ["true_program", "raster_copy", "injection", "blank"]
    copy = samples[1]
    assert copy.rendered_image is not None
    assert np.abs(copy.rendered_image.astype(int) - reference.astype(int)).mean() < 3
    scorers = {"ssim": RewardScorer(RewardConfig.model_validate({"formula": {"terms": [{"name": "ssim"}]}}))}
    table = hacking.score_probes(samples, scorers)
    assert table["ssim"]["svg/raster_copy"] >= table["ssim"]["svg/true_program"] - 0.02
    assert table["ssim"]["svg/blank"] == 0.0  # a blank rendering is a failure rule, for every reward
    assert "svg/raster_copy" in hacking.format_probes(table)


@pytest.mark.slow
def test_fast_ablation_runs_the_real_driver_and_resumes(tmp_path, run_caches):
    config = tmp_path / "ablation.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "overrides": [*run_caches, "ray.address=local", "run.total_steps=2", "run.eval_every_steps=1", "data.synth_eval_per_task=1",
                      "data.prompts_per_step=2", "rollout.sampling.n=2", "trainer.micro_batch_size_per_device=4",
                      "logging.wandb.mode=disabled"],
        "arms": [{"name": "render", "overrides": ["reward.formula.terms=[{name: render_success}]"]},
                 {"name": "visual_erm_oracle", "overrides": ["reward.backend=structural"]}],
        "seeds": [0], "out_dir": str(tmp_path / "out"), "probes_per_task": 1}))
    cmd = [sys.executable, "-m", "pipeline.experiments", "ablation", "--config", str(config), "--no-progress"]
    env = dict(os.environ, RAY_ADDRESS="", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "out"
    report = json.loads((out / "ablation.json").read_text())
    for arm in ("render", "visual_erm_oracle"):
        # evaluated before training and after each of the 2 updates
        assert sorted(ablation.eval_curve(out / f"{arm}-s0")) == [0, 1, 2]
        assert report["summary"]["table"][arm]["svg"]["ssim"]["seeds"] == 1
    assert "| render |" in proc.stdout and "title_only" in proc.stdout and "raster_copy" in proc.stdout
    assert "svg/injection" in proc.stdout
    # The oracle is not fooled by a note to the critic: the true program scores above the injection.
    probes = report["probes"]["visual_erm_oracle"]
    assert all(probes[f"{t}/injection"] < probes[f"{t}/true_program"] for t in ("chart", "table", "svg")), probes
    assert (out / "ablation.png").is_file() and (out / "hacking.md").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert again.returncode == 0 and again.stderr.count("already done") == 2
