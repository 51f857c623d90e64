"""Critic SFT with DeepSpeed (pipeline/critic/training, actors/critic_trainer.py) on the tiny critic.

Synthetic critic sets (numpy rectangles, labelled colour/shape changes) — no rendering. One Ray session for
the module; every Ray wait and subprocess has a timeout (the configs' `timeout_s`). The runs:
  a) 30 steps, 1 rank on Ray, ZeRO-2: the loss falls; final/ serves through HFBackend with valid answers
  b) 2 steps, 2 ranks on Ray vs 1 rank (train_local) on the same global batches: the same losses
  c) 4 steps saving every 2, resumed to 6; and a run "killed" after step 2, resumed: its losses are the
     uninterrupted run's
  d) the 1-rank run of (b): the weights moved and DeepSpeed counted its optimizer steps
  e) bad sets fail before training, naming the row (in-process, plus one through each launcher)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.critic.testing import TINY_LIMITS
from pipeline.critic.training.config import CriticTrainConfig, load_train_config
from pipeline.critic.training.dataset import CriticDataError, make_row, write_dataset
from pipeline.sample import JudgementLimits
from pipeline.schema import ConfigError

LIMITS = JudgementLimits(**TINY_LIMITS)
TIMEOUT_S = 240  # one run: process/actor start (~8 s), model load, a few dozen tiny steps, final save
# What differs between a shard (rank, micro-batch) and its neighbours: the error labels change the image.
LABELS = {
    "chart": {"category": "style", "severity": 2, "location": "bar", "description": "wrong colour"},
    "table": {"category": "numeric", "severity": 3, "location": "cell", "description": "value differs"},
    "svg": {"category": "shape", "severity": 1, "location": "rect", "description": "moved"},
}


def synthetic_rows(n: int, tasks=("chart", "table", "svg"), seed: int = 0, answer_format=None) -> list[dict]:
    """n rows over `tasks`: a coloured rectangle; every other rendering has the task's labelled change."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        task = tasks[i % len(tasks)]
        ref = np.full((48, 64, 3), 255, np.uint8)
        y, x = int(rng.integers(0, 30)), int(rng.integers(0, 40))
        ref[y:y + 12, x:x + 16] = rng.integers(0, 200, 3)
        rend, errors = ref.copy(), []
        if i % 2:
            rend[y:y + 12, x:x + 16] = 255 - ref[y, x]
            errors = [LABELS[task]]
        rows.append(make_row(task=task, source="edit" if errors else "clean", teacher="edit-engine", index=i,
                             split="train", seed=seed, reference=ref, rendering=rend, errors=errors,
                             limits=LIMITS, answer_format=answer_format))
    return rows


@pytest.fixture(scope="module")
def critic_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("critic-set")
    write_dataset(synthetic_rows(10), out, LIMITS)
    return out


@pytest.fixture(scope="module")
def base_dir(model_cache) -> Path:
    """The tiny critic, built here once (the ranks find it in the cache instead of racing to build it)."""
    from pipeline.tiny import ensure_model

    return ensure_model(CriticTrainConfig.model_fields["model"].default, model_cache)


@pytest.fixture(scope="module")
def ray_session(base_dir):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def make_cfg(data: Path, out: Path, cache: Path, *overrides: str) -> CriticTrainConfig:
    limits = [f"limits.{k}={v}" for k, v in TINY_LIMITS.items()]
    cfg = load_train_config(None, [f"data={data}", f"output_dir={out}", f"cache_dir={cache}", *limits,
                                   "wandb.mode=disabled", "lr=1e-2", "micro_batch_size=1", "num_cpus_per_rank=1",
                                   f"timeout_s={TIMEOUT_S}", *overrides])
    if cfg.model.path == "tiny":  # built once, as the CLI does before any rank starts (pipeline.tiny)
        from pipeline.tiny import ensure_model

        cfg.model = cfg.model.model_copy(update={"path": str(ensure_model(cfg.model, cfg.cache_dir))})
    return cfg


def state_dict(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


# --------------------------------------------------------------------------------------- config and data
def test_config_names_the_key_path_of_a_mistake(tmp_path):
    with pytest.raises(ConfigError, match="deepspeed.zero_stag"):
        load_train_config(None, ["data=x", "deepspeed.zero_stag=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: x\ndeepspeed: {zero_stage: 5}\n")
    with pytest.raises(ConfigError, match=r"deepspeed\.zero_stage"):
        load_train_config(bad)
    bad.write_text("data: x\nwandb: {mod: offline}\n")
    with pytest.raises(ConfigError, match=r"wandb\.mod.*did you mean 'mode'"):
        load_train_config(bad)
    cfg = load_train_config(None, ["data=x", "num_gpus_per_rank=1", "model.tiny.seed=1"])
    assert cfg.dist_backend == "nccl" and cfg.model.tiny.seed == 1  # nccl follows GPUs unless set
    with pytest.raises(ConfigError, match="dist_backend=nccl needs GPU"):
        load_train_config(None, ["data=x", "dist_backend=nccl"])


def test_data_order_is_seeded_and_ranks_take_disjoint_shares():
    from pipeline.critic.training.sft import global_batch, rank_share

    first_epoch = [i for step in range(5) for i in global_batch(10, step, 2, seed=3)]
    assert sorted(first_epoch) == list(range(10))  # each example once per epoch
    assert global_batch(10, 7, 4, seed=3) == global_batch(10, 7, 4, seed=3) != global_batch(10, 7, 4, seed=4)
    batch = global_batch(10, 1, 4, seed=0)  # (a batch that spans two epochs may hold an example twice)
    shares = [rank_share(batch, r, 2) for r in range(2)]
    assert shares[0] + shares[1] == batch and not set(shares[0]) & set(shares[1])


def _rewrite(src: Path, dst: Path, change) -> Path:
    """A copy of the set at `src` whose chart file has `change(rows)` applied."""
    shutil.copytree(src, dst)
    rows = pq.read_table(dst / "chart.parquet").to_pylist()
    change(rows)
    from pipeline.data.records import write_parquet

    write_parquet(rows, dst / "chart.parquet")
    return dst


def test_bad_sets_fail_naming_the_row(tmp_path, critic_set, model_cache):
    from pipeline.critic.training.sft import load_examples

    def cfg(data, *more):
        return make_cfg(data, tmp_path / "out", model_cache, *more)

    def corrupt(rows):
        rows[1]["images"][1]["bytes"] = b"\x89PNG not really"

    def foreign_category(rows):
        rows[2]["extra_info"]["errors"] = [dict(LABELS["chart"], category="numeric")]  # a table category

    with pytest.raises(CriticDataError, match=r"chart.parquet row 1 .*rendering.*does not decode"):
        load_examples(cfg(_rewrite(critic_set, tmp_path / "corrupt", corrupt)))
    with pytest.raises(CriticDataError, match=r"chart.parquet row 2 .*category 'numeric'"):
        load_examples(cfg(_rewrite(critic_set, tmp_path / "category", foreign_category)))
    chart_only = tmp_path / "chart-only"
    write_dataset(synthetic_rows(3, tasks=("chart",)), chart_only, LIMITS)
    with pytest.raises(CriticDataError, match="the set is empty"):
        load_examples(cfg(chart_only, "tasks=[svg]"))
    no_rows = tmp_path / "no-rows"
    no_rows.mkdir()
    (no_rows / "manifest.json").write_text(json.dumps({**json.loads((critic_set / "manifest.json").read_text()),
                                                       "files": {}, "rows": {}, "total_rows": 0}))
    with pytest.raises(CriticDataError, match="the set is empty"):
        load_examples(cfg(no_rows))
    with pytest.raises(CriticDataError, match=r"written with limits .*'max_errors': 2.*this run has limits"):
        load_examples(load_train_config(None, [f"data={critic_set}"]))  # default limits (24 errors)


def test_a_bad_set_fails_before_training_through_both_launchers(tmp_path, critic_set, model_cache, ray_session):
    from actors.critic_trainer import train_on_ray
    from pipeline.critic.training.launch import train_local

    mismatch = load_train_config(None, [f"data={critic_set}", f"output_dir={tmp_path / 'a'}", "timeout_s=60"])
    with pytest.raises(CriticDataError, match="written with limits"):  # in the driver: no actor started
        train_on_ray(mismatch)

    def corrupt(rows):
        rows[3]["images"][0]["bytes"] = b"garbage"

    bad = _rewrite(critic_set, tmp_path / "corrupt", corrupt)
    with pytest.raises(CriticDataError, match=r"chart.parquet row 3 .*reference image"):  # typed, from the child
        train_local(make_cfg(bad, tmp_path / "b", model_cache))
    assert not (tmp_path / "b").exists()  # nothing was written: it failed before training


# ------------------------------------------------------------------------------------------- training
def test_sft_lowers_the_loss_and_final_serves_valid_answers(tmp_path, critic_set, model_cache, ray_session):
    from actors.critic_trainer import train_on_ray
    from pipeline.critic.backends.base import JudgeRequest
    from pipeline.critic.backends.hf import HFBackend
    from pipeline.critic.schema import worst_case_tokens
    from pipeline.critic.testing import tiny_reward_config
    from pipeline.critic.training.dataset import read_examples
    from pipeline.models.config import ModelConfig

    out = tmp_path / "run"
    cfg = make_cfg(critic_set, out, model_cache, "steps=30", "micro_batch_size=2", "warmup_steps=3",
                   "deepspeed.zero_stage=2", "log_every_steps=5", "wandb.mode=offline")
    summary = train_on_ray(cfg)
    losses = summary["losses"]
    assert summary["steps"] == summary["global_steps"] == len(losses) == 30
    # Measured: 7.51 → 1.11 (answer tokens of the 3 tasks' answers, ~50 each). Clearly lower: below 40 %.
    assert np.mean(losses[-5:]) < 0.4 * losses[0], losses
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30]
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "step_s"} <= records[0].keys()
    assert list((out / "wandb").glob("offline-run-*"))

    final = Path(summary["final_dir"])
    assert final == out / "final" and not list(out.glob(".final-*"))  # renamed into place, no scratch left
    greedy = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "presence_penalty": 0.0,
              "max_new_tokens": max(worst_case_tokens(t, LIMITS) for t in ("chart", "table", "svg"))}
    reward_cfg = tiny_reward_config(tasks={t: {"sampling": greedy} for t in ("chart", "table", "svg")},
                                    max_image_side=cfg.max_image_side)
    backend = HFBackend(reward_cfg, ModelConfig(path=str(final)))
    assert backend.processor.tokenizer.eos_token_id in backend.eos_ids  # what training ended answers with
    examples = read_examples(critic_set, LIMITS)
    examples = [next(e for e in examples if e.task == t) for t in ("chart", "table", "svg")]
    judgements = backend.score([JudgeRequest(e.task, e.reference, e.rendering) for e in examples])
    assert all(j.valid for j in judgements), [j.reason for j in judgements]


@pytest.fixture(scope="module")
def rank_runs(tmp_path_factory, critic_set, model_cache, ray_session) -> dict:
    """The same 2 global batches of 2 examples: 2 ranks × 1 micro-batch (Ray) and 1 rank × 2 (subprocess)."""
    from actors.critic_trainer import train_on_ray
    from pipeline.critic.training.launch import train_local

    root = tmp_path_factory.mktemp("ranks")
    two = train_on_ray(make_cfg(critic_set, root / "two", model_cache, "ranks=2", "steps=2"))
    one = train_local(make_cfg(critic_set, root / "one", model_cache, "gradient_accumulation_steps=2", "steps=2"))
    return {"one": one, "two": two}


def grad_norms(summary: dict) -> list[float]:
    metrics = Path(summary["final_dir"]).parent / "metrics.jsonl"
    return [json.loads(line)["grad_norm"] for line in metrics.read_text().splitlines()]


def test_two_ranks_give_the_losses_and_gradients_of_one_rank(rank_runs):
    one, two = rank_runs["one"], rank_runs["two"]
    # Each example goes through the same forward pass in either layout (micro-batch 1, one thread), so the
    # first loss is the same float64 sum in another order (~1e-15). The second follows one update from
    # gradients summed by gloo instead of locally: fp32 addition order, ~1e-7 relative, through Adam; 1e-5
    # allows for that. Measured on this machine: identical to the last digit, losses and gradient norms.
    assert one["losses"][0] == pytest.approx(two["losses"][0], rel=1e-9)
    assert one["losses"][1] == pytest.approx(two["losses"][1], rel=1e-5)
    assert one["losses"][1] < one["losses"][0] - 0.1
    # The losses alone cannot see a gradient off by a constant (Adam and clipping are scale-invariant); the
    # norm can: without the ×world_size (DeepSpeed averages over ranks) 2 ranks measured exactly half.
    assert grad_norms(one) == pytest.approx(grad_norms(two), rel=1e-5)


def test_deepspeed_steps_the_optimizer(rank_runs, base_dir):
    summary = rank_runs["one"]
    assert summary["global_steps"] == 2  # 2 optimizer steps over 4 micro-steps
    before, after = state_dict(base_dir), state_dict(Path(summary["final_dir"]))
    assert before.keys() == after.keys()
    moved = [k for k in before if not np.array_equal(before[k].numpy(), after[k].numpy())]
    assert len(moved) > 0.9 * len(before), sorted(set(before) - set(moved))


def test_resume_continues_the_step_count_and_the_data_order(tmp_path, critic_set, model_cache):
    from pipeline.critic.training.launch import train_local

    first = tmp_path / "first"
    run = train_local(make_cfg(critic_set, first, model_cache, "steps=4", "save_every_steps=2"))
    ckpts = first / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step*")) == ["step2", "step4"]
    assert (ckpts / "latest").read_text().strip() == "step4"
    assert json.loads((ckpts / "step4" / "trainer_state.json").read_text())["step"] == 4

    # A run that died after step 2: resumed, it trains steps 3 and 4 exactly as the uninterrupted one did.
    crashed = tmp_path / "crashed"
    shutil.copytree(first, crashed)
    shutil.rmtree(crashed / "checkpoints" / "step4")
    (crashed / "checkpoints" / "latest").write_text("step2")
    again = train_local(make_cfg(critic_set, crashed, model_cache, "steps=4", "save_every_steps=2", "resume=true"))
    assert again["start_step"] == 2 and again["global_steps"] == 4
    assert again["losses"] == pytest.approx(run["losses"][2:], rel=1e-9)

    # More steps on the finished run: the count continues from its newest checkpoint; the oldest is dropped.
    more = train_local(make_cfg(critic_set, first, model_cache, "steps=6", "save_every_steps=2", "resume=true",
                                "keep_checkpoints=1"))
    assert more["start_step"] == 4 and more["global_steps"] == 6 and len(more["losses"]) == 2
    assert sorted(p.name for p in ckpts.glob("step*")) == ["step6"]
    assert json.loads((ckpts / "step6" / "trainer_state.json").read_text())["step"] == 6


def test_a_run_past_its_timeout_is_killed(tmp_path, critic_set, model_cache, ray_session):
    import time

    from actors.critic_trainer import train_on_ray
    from pipeline.critic.training.launch import train_local

    with pytest.raises(TimeoutError, match="timeout_s=2"):  # the subprocess is still importing torch
        train_local(make_cfg(critic_set, tmp_path / "local", model_cache, "timeout_s=2"))
    with pytest.raises(TimeoutError, match="timeout_s=4"):  # the actors are up, the ranks are loading
        train_on_ray(make_cfg(critic_set, tmp_path / "ray", model_cache, "timeout_s=4"))
    deadline = time.monotonic() + 30
    while ray_session.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)  # killed actors and the removed placement group give their CPUs back
    assert ray_session.available_resources().get("CPU", 0) == 2


def test_sft_trains_the_prompt_and_images_the_critic_is_served_with(tmp_path, base_dir, model_cache):
    """A set in the released answer format trains only for a critic served in that format, and the training
    prompt is then the serving one (released layout: images first, no captions) with its image handling."""
    from pipeline.critic.config import RELEASED_FORMAT, RewardConfig
    from pipeline.critic.images import prepare_pair
    from pipeline.critic.prompts import messages
    from pipeline.critic.training.sft import Encoder, load_examples
    from pipeline.models import load_processor

    rows = synthetic_rows(4, tasks=("chart",), answer_format=RELEASED_FORMAT)
    released_set = tmp_path / "released"
    write_dataset(rows, released_set, LIMITS, answer_formats={"chart": RELEASED_FORMAT})
    with pytest.raises(CriticDataError, match=r"chart answers are in the 'released' answer format, the critic "
                                              r"would be served with 'ours'"):
        load_examples(make_cfg(released_set, tmp_path / "out", model_cache))

    serve = {"tasks": {"chart": {"answer_format": "released", "layout": "released"}}}
    cfg = make_cfg(released_set, tmp_path / "out", model_cache, f"serve={json.dumps(serve)}")
    examples = load_examples(cfg)
    assert '"structure_error_count"' in examples[0].answer  # the released shape, counts first
    processor = load_processor(base_dir)
    encoder = Encoder(processor, cfg.max_image_side, cfg.serve)
    served = RewardConfig.model_validate(serve)
    assert encoder.prompt("chart") == processor.apply_chat_template(messages("chart", served),
                                                                    add_generation_prompt=True, tokenize=False)
    assert "Reference image:" not in encoder.prompt("chart")  # ours captions each image; released does not
    example = examples[0]
    inputs = encoder.encode(example, encoder.answer_ids(example))
    ref, rend = prepare_pair("chart", example.reference, example.rendering, "released", cfg.max_image_side)
    expected = processor.image_processor(images=[ref, rend], return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == expected["image_grid_thw"].tolist()
    assert torch.allclose(inputs["pixel_values"], expected["pixel_values"])  # the JPEG round trip included


def test_the_answer_loss_equals_the_full_logits_cross_entropy(critic_set, base_dir):
    """SFT's loss projects only the answer positions through the LM head (full fp32 logits of an 8B critic
    with two 1024 px images are tens of GB); it must be the same number as the plain full-logits loss."""
    import torch.nn.functional as F

    from pipeline.critic.training.dataset import read_examples
    from pipeline.critic.training.sft import Encoder, answer_loss
    from pipeline.models import load_model, load_processor
    from pipeline.models.processor import collate

    processor = load_processor(base_dir)
    model = load_model(base_dir).eval()
    encoder = Encoder(processor, 128)
    examples = read_examples(critic_set, LIMITS)[:3]
    inputs = collate([encoder.encode(e, encoder.answer_ids(e)) for e in examples], processor.tokenizer.pad_token_id)
    labels = inputs.pop("labels")
    with torch.no_grad():
        logits = model(**inputs).logits.float()
        full = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100,
                               reduction="sum")
        answer = answer_loss(model, inputs, labels)
    assert int((labels != -100).sum()) > 0
    torch.testing.assert_close(answer, full, rtol=1e-5, atol=1e-4)


def test_the_memory_estimate_moves_with_what_should_move_it():
    """An 8B-class Qwen3-VL config (the published sizes: text 4096 × 36 layers, vision 1152 × 27) on 8 ranks."""
    from pipeline.critic.training.memory import SFTShape, estimate

    config = {"text_config": {"hidden_size": 4096, "num_hidden_layers": 36, "intermediate_size": 12288,
                              "vocab_size": 151936, "num_attention_heads": 32, "num_key_value_heads": 8,
                              "head_dim": 128},
              "vision_config": {"hidden_size": 1152, "depth": 27, "intermediate_size": 4304, "patch_size": 16,
                                "spatial_merge_size": 2}}
    base = dict(zero_stage=3, ranks=8, micro_batch_size=2, bf16=True)
    with_ckpt = estimate(config, gradient_checkpointing=True, **base)
    without = estimate(config, gradient_checkpointing=False, **base)
    assert 7.5 < with_ckpt["params_billion"] < 9.5
    assert without["activations"] > 5 * with_ckpt["activations"]
    assert with_ckpt["total"] < 40 < without["total"]  # checkpointing leaves an 80 GB card room; without it, half goes
    zero1 = estimate(config, gradient_checkpointing=True, **{**base, "zero_stage": 1})
    assert zero1["weights"] == 8 * with_ckpt["weights"]  # ZeRO-3 shards the weights, ZeRO-1 does not
    assert estimate(config, gradient_checkpointing=True, shape=SFTShape(image_side=512), **base)["activations"] \
        < with_ckpt["activations"]
