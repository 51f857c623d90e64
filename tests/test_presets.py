"""GPU presets (configs/gpu/): each loads through the strict schema, carries the paper's hyper-parameters, and
its placement plan (`pipeline/main.py --dry-run`) fits the KubeRay manifest it names; a cluster too small
fails naming the actor group and the resource. The plan logic (pipeline/placement.py) is tested on its own too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import REPO_ROOT, load_config
from pipeline.main import main
from pipeline.placement import (
    ActorRequest,
    NodeGroup,
    PlacementError,
    config_problems,
    dry_run,
    load_manifest,
    node_groups_from_manifest,
    parse_quantity,
    plan,
    plan_for_config,
    preset_cluster_manifest,
    summary,
)

PRESETS = sorted((REPO_ROOT / "configs" / "gpu").glob("*.yaml"))
TASKS = {"chart": ["chart"], "table": ["table"], "svg": ["svg"], "mixed": ["chart", "table", "svg"]}


def test_the_eight_presets_exist():
    assert sorted(p.stem for p in PRESETS) == sorted(f"{t}-{s}" for t in TASKS for s in ("1x8", "4x8"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_loads_and_fits_its_cluster(preset, capsys):
    cfg = load_config(preset)
    manifest = preset_cluster_manifest(preset, REPO_ROOT)
    assert manifest is not None and manifest.is_file(), f"{preset.name} names no existing manifest"
    assert main(["--dry-run", "--config", str(preset)]) == 0
    out = capsys.readouterr().out
    assert "fits: every actor has a node" in out
    assert f"placement plan: configs/gpu/{preset.name} on {manifest.relative_to(REPO_ROOT)}" in out
    # every actor group targets a group that exists in that manifest
    _, groups = load_manifest(manifest)
    names = {g.name for g in groups}
    for target in (cfg.rollout.node_group, cfg.render.node_group, cfg.reward.actors.node_group,
                   cfg.trainer.node_group):
        assert target in names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_has_the_paper_settings(preset):
    cfg = load_config(preset)
    task, size = preset.stem.split("-")
    assert cfg.data.tasks == TASKS[task] and len(cfg.data.train_paths) == len(TASKS[task])
    assert cfg.run.name == preset.stem
    # models: Qwen3-VL-8B-Instruct policy, Visual-ERM-8B reward, from local directories, bf16
    assert cfg.models.policy.path == "/models/Qwen3-VL-8B-Instruct" and cfg.models.policy.dtype == "bfloat16"
    assert cfg.models.reward.path == "/models/Visual-ERM-8B" and cfg.reward.backend == "vllm"
    # RL (paper): GRPO, lr 1e-6, 256 prompts × 8 rollouts, KL loss 0.01 low_var_kl, entropy 0, 8192 tokens
    t = cfg.trainer
    assert (t.lr, t.use_kl_loss, t.kl_loss_coef, t.kl_loss_type, t.entropy_coeff) == (
        1e-6, True, 0.01, "low_var_kl", 0.0)
    assert (cfg.data.prompts_per_step, cfg.rollout.sampling.n) == (256, 8)
    assert cfg.rollout.sampling.max_new_tokens == 8192 and cfg.rollout.vllm.max_model_len >= 8192 + 8192
    # GPU engines
    assert (t.param_dtype, t.attn_implementation, t.use_remove_padding) == ("bfloat16", "flash_attention_2", True)
    assert cfg.rollout.backend == "vllm" and cfg.rollout.weight_sync == "nccl"
    # RM sampling per task (paper): charts/SVG T 0.7, top_p 0.8, top_k 20, presence 1.5; tables greedy
    for kind in ("chart", "svg"):
        s = cfg.reward.sampling(kind)
        assert (s.temperature, s.top_p, s.top_k, s.presence_penalty, s.max_new_tokens) == (0.7, 0.8, 20, 1.5, 4096)
    assert cfg.reward.sampling("table").temperature == 0.0
    assert config_problems(cfg) == []
    # sizes by layout
    gpus = {"1x8": 8, "4x8": 32}[size]
    used = cfg.rollout.replicas * cfg.rollout.num_gpus + t.ranks * t.num_gpus_per_rank \
        + cfg.reward.actors.replicas * cfg.reward.actors.num_gpus
    assert used == gpus


def test_presets_share_everything_but_task_and_size():
    """load_config has no includes, so the presets repeat the common settings: they must not drift."""
    def normalised(path: Path) -> dict:
        data = load_config(path).model_dump(mode="json")
        for section, key in (("run", "name"), ("data", "tasks"), ("data", "train_paths"), ("data", "eval_paths"),
                             ("logging", "wandb")):
            data[section].pop(key)
        for section, key in (("rollout", "replicas"), ("trainer", "ranks"), ("render", "actors")):
            data[section].pop(key)
        data["reward"]["actors"].pop("replicas")
        return data

    reference = normalised(PRESETS[0])
    for preset in PRESETS[1:]:
        assert normalised(preset) == reference, f"{preset.name} differs from {PRESETS[0].name}"


def test_the_revision_preset_is_mixed_4x8_with_revision_turned_on(capsys):
    """configs/gpu/revision/mixed-4x8.yaml: training revision episodes on, everything else as mixed-4x8."""
    path = REPO_ROOT / "configs" / "gpu" / "revision" / "mixed-4x8.yaml"
    cfg, base = load_config(path), load_config(REPO_ROOT / "configs" / "gpu" / "mixed-4x8.yaml")
    assert (cfg.rollout.revision_rounds, cfg.run.eval_revision_rounds) == (1, 2)
    assert cfg.data.prompts_per_step * cfg.rollout.sampling.n * 2 == base.data.prompts_per_step * base.rollout.sampling.n
    assert config_problems(cfg) == []
    assert main(["--dry-run", "--config", str(path)]) == 0
    assert "fits: every actor has a node" in capsys.readouterr().out
    data, reference = cfg.model_dump(mode="json"), base.model_dump(mode="json")
    for d in (data, reference):
        d["run"].pop("name"), d["run"].pop("eval_revision_rounds"), d["data"].pop("prompts_per_step")
        d["rollout"].pop("revision_rounds"), d["rollout"]["vllm"].pop("max_model_len")
    assert data == reference


def test_hand_checked_plan_mixed_4x8():
    """4 GPU machines (rollout 1 × 8 GPU, trainer 2 × 8, reward 1 × 8) + 2 render pods × 32 CPU."""
    cfg = load_config(REPO_ROOT / "configs/gpu/mixed-4x8.yaml")
    _, groups = load_manifest(REPO_ROOT / "cluster/raycluster.yaml")
    assert [(g.name, g.replicas, g.cpus, g.gpus) for g in groups] == [
        ("headgroup", 1, 0, 0), ("rollout", 1, 96, 8), ("trainer", 2, 96, 8), ("reward", 1, 96, 8),
        ("render", 2, 32, 0)]
    assert groups[1].memory_bytes == 800 * 2**30
    result = plan_for_config(cfg, groups)
    assert summary(result) == {
        "render": {"render-0": 8, "render-1": 8},  # 16 actors × 4 CPU on 2 × 32 CPU
        "reward": {"reward-0": 8},  # 8 × (1 GPU, 8 CPU)
        "trainer": {"trainer-0": 8, "trainer-1": 8},  # 16 ranks, PACK fills one node first
        "rollout": {"rollout-0": 8},
        "fits": True,
    }
    free = {n.name: n.free for n in result.nodes}
    assert free["trainer-1"] == {"CPU": 96 - 8 * 8, "GPU": 0} and free["render-1"] == {"CPU": 0, "GPU": 0}


def test_four_node_preset_on_the_one_node_cluster_fails_naming_groups(capsys):
    code = main(["--dry-run", "--config", str(REPO_ROOT / "configs/gpu/chart-4x8.yaml"),
                 "--cluster", str(REPO_ROOT / "cluster/raycluster-1x8.yaml")])
    assert code == 3
    err = capsys.readouterr().err
    assert "DOES NOT FIT" in err
    assert "trainer: only 4 of 16 replicas fit;" in err and "GPU: 16×1 = 16 GPU wanted, node group 'trainer' has 4" in err
    assert "rollout: only 2 of 8 replicas fit;" in err and "reward: only 2 of 8" in err


def test_cli_dry_run_exit_codes():
    """The script as users run it: exit 0 and the plan on stdout; exit 3 (a resource error, as in a real run)
    and the group on stderr."""
    cmd = [sys.executable, "pipeline/main.py", "--dry-run", "--config", "configs/gpu/svg-1x8.yaml"]
    ok = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "trainer  4 × {CPU 8, GPU 1} on node group 'trainer'" in ok.stdout
    bad = subprocess.run(cmd + ["trainer.ranks=8"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 3
    assert "trainer: only 4 of 8 replicas fit;" in bad.stderr and "GPU: 8×1 = 8 GPU wanted" in bad.stderr


def test_default_preset_names_no_cluster():
    code, report = dry_run(load_config(None), None, None, REPO_ROOT)
    assert code == 2 and "--cluster" in report


# ---------------------------------------------------------------------------------------- placement logic
def _manifest(worker_groups: list[dict], head_params: dict | None = None) -> dict:
    def pod(resources: dict) -> dict:
        return {"spec": {"containers": [{"name": "ray", "image": "x", "resources": resources}]}}

    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "t"},
            "spec": {"headGroupSpec": {"rayStartParams": head_params or {"num-cpus": "0"},
                                       "template": pod({"limits": {"cpu": "2", "memory": "4Gi"}})},
                     "workerGroupSpecs": [
                         {"groupName": g["name"], "replicas": g.get("replicas", 1),
                          "rayStartParams": g.get("params", {}), **({"resources": g["top"]} if "top" in g else {}),
                          "template": pod(g["resources"])} for g in worker_groups]}}


def test_node_resources_follow_kuberay_precedence():
    groups = node_groups_from_manifest(_manifest([
        {"name": "limits", "resources": {"limits": {"cpu": "1500m", "memory": "8Gi", "nvidia.com/gpu": 2}}},
        {"name": "requests-only", "resources": {"requests": {"cpu": 4, "memory": "1G"}}},
        {"name": "params", "params": {"num-cpus": "3", "num-gpus": "1"},
         "resources": {"limits": {"cpu": "16", "nvidia.com/gpu": "4"}}},
        {"name": "top", "top": {"CPU": "0"}, "params": {"num-cpus": "3"}, "resources": {"limits": {"cpu": "16"}}},
        {"name": "three", "replicas": 3, "resources": {"limits": {"cpu": "2"}}},
    ]))
    got = {g.name: (g.replicas, g.cpus, g.gpus, g.memory_bytes) for g in groups}
    assert got == {"headgroup": (1, 0, 0, 4 * 2**30), "limits": (1, 2, 2, 8 * 2**30),
                   "requests-only": (1, 4, 0, 10**9), "params": (1, 3, 1, 0), "top": (1, 0, 0, 0),
                   "three": (3, 2, 0, 0)}


@pytest.mark.parametrize("value, expected", [("500m", 0.5), ("64Gi", 64 * 2**30), (8, 8), ("1e3", 1000),
                                             ("2k", 2000), ("1.5", 1.5)])
def test_parse_quantity(value, expected):
    assert parse_quantity(value, "x") == expected


@pytest.mark.parametrize("bad", ["eight", "8 GB", "", True])
def test_parse_quantity_rejects_garbage(bad):
    with pytest.raises(PlacementError, match="x:"):
        parse_quantity(bad, "x")


def test_manifest_errors_are_clear(tmp_path):
    with pytest.raises(PlacementError, match="no RayCluster or RayJob"):
        path = tmp_path / "svc.yaml"
        path.write_text(yaml.safe_dump({"kind": "Service"}))
        load_manifest(path)
    with pytest.raises(PlacementError, match="no CPU count"):
        node_groups_from_manifest(_manifest([{"name": "w", "resources": {}}]))
    job = {"kind": "RayJob", "spec": {"clusterSelector": {"ray.io/cluster": "x"}}}
    with pytest.raises(PlacementError, match="existing cluster"):
        node_groups_from_manifest(job)


def test_too_small_trainer_group_names_group_and_resource():
    groups = [NodeGroup("headgroup", 1, 0, 0, is_head=True), NodeGroup("trainer", 1, 96, 8)]
    result = plan([ActorRequest("trainer", 16, 8, 1, "trainer", placement_group=True)], groups)
    assert not result.fits
    assert result.problems == [(
        "trainer: only 8 of 16 replicas fit; GPU: 16×1 = 16 GPU wanted, node group 'trainer' has 8 "
        "(free on each node now: trainer-0 0)")]


def test_replica_larger_than_every_node():
    result = plan([ActorRequest("rollout", 1, 4, 2, "gpu")], [NodeGroup("gpu", 2, 96, 1)])
    assert result.problems == ["rollout: one replica asks for 2 GPU but the largest node in node group 'gpu' has 1 GPU"]


def test_unknown_node_group_is_named():
    result = plan([ActorRequest("render", 1, 1, 0, "renderers")], [NodeGroup("render", 1, 8, 0)])
    assert result.problems == ["render: node group 'renderers' is not in the cluster (groups: render)"]


def test_cpu_only_work_avoids_gpu_nodes_and_targeting_is_honoured():
    groups = [NodeGroup("gpu", 1, 16, 8), NodeGroup("cpu", 1, 4, 0)]
    result = plan([ActorRequest("render", 6, 1, 0), ActorRequest("rollout", 1, 2, 1, "gpu"),
                   ActorRequest("pinned", 1, 1, 0, "gpu")], groups)
    assert result.fits
    assert result.counts("render") == {"cpu-0": 4, "gpu-0": 2}  # CPU nodes first, then spill onto GPU nodes
    assert result.counts("pinned") == {"gpu-0": 1}


def test_vllm_tensor_parallel_must_match_gpus_per_replica():
    cfg = load_config(REPO_ROOT / "configs/gpu/chart-1x8.yaml", ["reward.vllm.tensor_parallel_size=2"])
    problems = config_problems(cfg)
    assert problems == ["reward: vLLM tensor_parallel_size=2 needs reward.actors.num_gpus=2 per replica, got 1"]
    _, groups = load_manifest(REPO_ROOT / "cluster/raycluster-1x8.yaml")
    assert not plan_for_config(cfg, groups).fits
