"""verl's FSDP2 training engine on CPU (gloo), on the tiny Qwen3-VL, with an image in every sample.

Layout of the expensive part: this pytest process builds the tiny model, samples GRPO groups with plain HF
`generate` (the CPU rollout path) and scores each response with a stock HF forward pass. Trainer ranks then run
in fresh subprocesses (`python -c ...`, each with a timeout), because a verl engine changes its process for good:
it owns a torch.distributed group and monkey-patches the transformers Qwen3-VL classes.

What the engine tests prove:
- one GRPO step (PPO-clip, low_var_kl KL loss to a reference engine, entropy, token-mean) runs through verl's
  TrainingWorker; the loss is finite, metrics are reported, all weights move, the vision tower's included;
- the engine's log-probs for the batch equal HF's log-probs of the same model on the same (prompt, image,
  response): the pixels, M-RoPE positions and response alignment reach the trainer exactly as in rollout;
- two gloo ranks with half the batch each compute the same loss and gradient norm as one rank with all of it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
RANK_TIMEOUT_S = 150  # one trainer subprocess, imports included (~15-40 s on a loaded 2-core box)
GROUPS, GROUP_SIZE = 2, 2  # 4 rollouts: 2 images × 2 answers each
LOG_PROB_ATOL = 1e-4  # fp32 both sides; measured max difference ~1e-6
IS_CAP = 1.001  # truncation cap of the stale second step: low enough that some tokens are cut


# ---------------------------------------------------------------------------------------------------------
# Fixtures: tiny model, rollouts with HF log-probs
# ---------------------------------------------------------------------------------------------------------
def _project_code_corpus() -> list[str]:
    # The tokenizer only needs some code to train on; pipeline.data's synthetic programs may not exist yet.
    return [p.read_text() for p in sorted((REPO_ROOT / "pipeline").rglob("*.py"))]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    from pipeline.models.config import TinyModelConfig
    from pipeline.tiny.model import build_tiny_qwen3_vl

    out = tmp_path_factory.mktemp("tiny-qwen3-vl")
    build_tiny_qwen3_vl(TinyModelConfig(), out, corpus=_project_code_corpus)
    return out


MESSAGES = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Write the code for this."}]}
]


def _response_length(group: int, k: int) -> int:
    # Group 0: equal lengths (one prompt, both answers cut at max_new_tokens), which in the 2-rank run makes
    # rank 0's whole shard equal-length, the case verl's own padding removal gets wrong (see batch.py).
    # Group 1: unequal lengths exercise the padding.
    return 8 if group == 0 else 6 + 5 * k


def _image(seed: int, height: int, width: int) -> np.ndarray:
    return (np.random.RandomState(seed).rand(height, width, 3) * 255).astype(np.uint8)


def _hf_response_log_probs(model, enc, response_ids: torch.Tensor) -> torch.Tensor:
    """Stock transformers forward (HF computes its own M-RoPE positions from mm_token_type_ids)."""
    input_ids = torch.cat([enc.input_ids, response_ids])[None]
    mm_token_type_ids = torch.cat([enc.mm_token_type_ids, torch.zeros_like(response_ids)])[None]
    with torch.no_grad():
        logits = (
            model(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                mm_token_type_ids=mm_token_type_ids,
                pixel_values=enc.pixel_values,
                image_grid_thw=enc.image_grid_thw,
            )
            .logits[0]
            .float()
        )
    log_probs = torch.log_softmax(logits[:-1], dim=-1).gather(-1, input_ids[0, 1:, None])[:, 0]
    return log_probs[-len(response_ids) :]


@pytest.fixture(scope="module")
def rollouts(tiny_model_dir):
    """GRPO groups sampled with HF generate; each answer's log-probs from an HF forward of the same model."""
    from pipeline.models import load_model, load_processor
    from pipeline.training.batch import GRPORollout, encode_prompt

    processor, model = load_processor(tiny_model_dir), load_model(tiny_model_dir).eval()
    torch.manual_seed(0)
    result = []
    for g in range(GROUPS):
        image = _image(seed=g, height=48 + 16 * g, width=64)  # different image sizes → different grids
        enc = encode_prompt(processor, MESSAGES, [image])
        for k in range(GROUP_SIZE):
            out = model.generate(
                input_ids=enc.input_ids[None],
                attention_mask=torch.ones_like(enc.input_ids[None]),
                mm_token_type_ids=enc.mm_token_type_ids[None],
                pixel_values=enc.pixel_values,
                image_grid_thw=enc.image_grid_thw,
                max_new_tokens=_response_length(g, k),
                min_new_tokens=_response_length(g, k),
            )
            response = out[0, enc.input_ids.numel() :]
            result.append(
                GRPORollout(
                    messages=MESSAGES,
                    images=[image],
                    response_ids=response.tolist(),
                    rollout_log_probs=_hf_response_log_probs(model, enc, response).tolist(),
                    reward=float(k) + 0.25 * g,
                    group_id=f"prompt-{g}",
                    prompt_ids=enc.input_ids.tolist(),
                )
            )
    return result


@pytest.fixture(scope="module")
def rollouts_file(rollouts, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rollouts") / "rollouts.pt"
    torch.save([r.__dict__ for r in rollouts], path)
    return path


# ---------------------------------------------------------------------------------------------------------
# One trainer rank (runs in a subprocess)
# ---------------------------------------------------------------------------------------------------------
def _full_parameters(module) -> dict[str, torch.Tensor]:
    """Unsharded copies of the FSDP2 parameters (a collective: every rank must call it)."""
    return {
        name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
        for name, p in module.named_parameters()
    }


def run_trainer_rank(
    rank: int, world_size: int, port: int, model_dir: str, rollouts_path: str, out_path: str
):
    """Entry point of a trainer subprocess: one GRPO step through verl's engine, results as JSON."""
    from pipeline.training.verl_platform import prepare_process_for_verl_cpu, shutdown_process_group

    # One thread per rank: two ranks share the two cores, and oversubscribed BLAS threads crawl.
    prepare_process_for_verl_cpu(rank, world_size, master_port=port, timeout_s=120, num_threads=1)

    from transformers import AutoConfig

    from pipeline.models import load_processor
    from pipeline.training import TrainerConfig
    from pipeline.training.batch import GRPORollout, build_grpo_batch, shard_for_rank
    from pipeline.training.engine import (
        compute_log_probs,
        create_policy_worker,
        create_reference_worker,
        export_policy_weights,
        grpo_update,
        rollout_is_weights,
    )

    cfg = TrainerConfig(lr=1e-3, micro_batch_size_per_device=1, kl_loss_coef=0.01, entropy_coeff=0.001)
    rollouts = [GRPORollout(**fields) for fields in torch.load(rollouts_path, weights_only=False)]
    batch = build_grpo_batch(rollouts, load_processor(model_dir), AutoConfig.from_pretrained(model_dir))
    local = shard_for_rank(batch, rank, world_size)
    local_rows = list(range(len(batch)))[rank * len(local) : (rank + 1) * len(local)]

    started = time.perf_counter()
    policy = create_policy_worker(model_dir, cfg, group_size=GROUP_SIZE)
    reference = create_reference_worker(model_dir, cfg)
    build_s = time.perf_counter() - started

    engine_log_probs = compute_log_probs(policy, local)["log_probs"]
    before = _full_parameters(policy.engine.module)
    metrics = grpo_update(policy, local, cfg, reference=reference, global_batch_size=len(batch))
    after = _full_parameters(policy.engine.module)
    updated_log_probs = compute_log_probs(policy, local)["log_probs"]
    exported = export_policy_weights(policy)  # collective
    exported_bf16 = export_policy_weights(policy, "bfloat16")  # what the GPU presets put on the wire
    if rank == 0:
        torch.save(exported, Path(out_path).with_suffix(".weights.pt"))
        torch.save(exported_bf16, Path(out_path).with_suffix(".bf16.pt"))
    # Second step, off-policy by one version: the rollouts were sampled by the initial policy, the trainer is
    # one update further. Truncated IS: old log-probs recomputed, the loss weighted by min(pi_v1/pi_v0, cap).
    stale_cfg = cfg.model_copy(update={"recompute_old_log_probs": True, "rollout_is": True,
                                       "rollout_is_cap": IS_CAP})
    weights, _ = rollout_is_weights(updated_log_probs, local.batch["old_log_probs"], local.batch["response_mask"],
                                    IS_CAP)
    mask, adv = local.batch["response_mask"].float(), local.batch["advantages"]
    # At the start of the step PPO's ratio is 1 (old = current), so pg_loss = -sum(A * w) / tokens exactly.
    expected_pg_loss = {"weighted": float(-(adv * weights * mask).sum() / mask.sum()),
                        "unweighted": float(-(adv * mask).sum() / mask.sum())}
    second = grpo_update(policy, local, stale_cfg, reference=reference, global_batch_size=len(batch))

    changed = [n for n in before if not torch.equal(before[n], after[n])]
    result = {
        "rank": rank,
        "rows": local_rows,
        "engine_log_probs": [
            engine_log_probs[i, : len(rollouts[row].response_ids)].tolist()
            for i, row in enumerate(local_rows)
        ],
        "updated_engine_log_probs": [
            updated_log_probs[i, : len(rollouts[row].response_ids)].tolist()
            for i, row in enumerate(local_rows)
        ],
        "metrics": metrics,
        "second_step_metrics": second,
        "second_step_expected_pg_loss": expected_pg_loss,
        "num_params": len(before),
        "changed_params": changed,
        "vision_params": [n for n in before if "visual" in n],
        "param_checksum": float(sum(p.double().abs().sum() for p in after.values())),
        "engine_build_s": build_s,
    }
    Path(out_path).write_text(json.dumps(result))
    shutdown_process_group()


def _free_port() -> int:
    from pipeline.distributed import free_port

    return free_port()


def _launch_ranks(world_size: int, model_dir: Path, rollouts_path: Path, out_dir: Path) -> list[dict]:
    """Start `world_size` trainer subprocesses (one gloo group), wait with a shared deadline, read their JSON."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "VERL_LOGGING_LEVEL": "WARN"}
    procs, outputs, logs = [], [], []
    for rank in range(world_size):
        outputs.append(out_dir / f"rank{rank}.json")
        logs.append(out_dir / f"rank{rank}.log")
        code = (
            "from tests.test_verl_engine import run_trainer_rank\n"
            f"run_trainer_rank({rank}, {world_size}, {port}, {str(model_dir)!r}, {str(rollouts_path)!r}, "
            f"{str(outputs[-1])!r})"
        )
        with open(logs[-1], "w") as log:  # the child keeps its own copy of the descriptor
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
    deadline = time.monotonic() + RANK_TIMEOUT_S
    failures = []
    for rank, proc in enumerate(procs):
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            proc.wait(timeout=10)
            failures.append(f"rank {rank} timed out after {RANK_TIMEOUT_S} s")
        if proc.returncode != 0 or not outputs[rank].exists():
            failures.append(f"rank {rank} exited {proc.returncode}:\n{logs[rank].read_text()[-3000:]}")
    if failures:
        pytest.fail("\n\n".join(failures))
    return [json.loads(out.read_text()) for out in outputs]


@pytest.fixture(scope="module")
def single_rank(tiny_model_dir, rollouts_file, tmp_path_factory) -> dict:
    started = time.perf_counter()
    out_dir = tmp_path_factory.mktemp("world1")
    [result] = _launch_ranks(1, tiny_model_dir, rollouts_file, out_dir)
    result["wall_s"] = time.perf_counter() - started
    result["weights_path"] = out_dir / "rank0.weights.pt"
    result["bf16_weights_path"] = out_dir / "rank0.bf16.pt"
    return result


# ---------------------------------------------------------------------------------------------------------
# Engine tests
# ---------------------------------------------------------------------------------------------------------
EXPECTED_METRICS = ("loss", "pg_loss", "pg_clipfrac", "kl", "entropy", "grad_norm", "lr", "step_time_s")


def test_grpo_step_through_verl_engine_with_images(single_rank, rollouts):
    metrics = single_rank["metrics"]
    for key in EXPECTED_METRICS:
        assert key in metrics and math.isfinite(metrics[key]), (key, metrics)
    assert metrics["update_skipped"] == 0.0
    assert metrics["grad_norm"] > 0
    assert metrics["lr"] == pytest.approx(1e-3)
    # Step 0: the policy IS the reference, so the low_var_kl term is exactly zero ...
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-7)
    # ... and after one update it is not: the KL loss sees the policy move away from the reference.
    assert single_rank["second_step_metrics"]["kl"] > 0
    assert 0 < metrics["entropy"] <= math.log(4096) + 1e-3  # a near-uniform random model over 4k tokens
    assert 0 <= metrics["pg_clipfrac"] <= 1

    # Every weight moved, the vision tower's included: the image features took part in the loss.
    changed = set(single_rank["changed_params"])
    assert len(changed) == single_rank["num_params"], sorted(set(single_rank["vision_params"]) - changed)
    assert single_rank["vision_params"] and set(single_rank["vision_params"]) <= changed
    print(
        f"\nverl FSDP2/gloo, 1 rank, {len(rollouts)} image rollouts: engine build {single_rank['engine_build_s']:.1f} s,"
        f" GRPO step {metrics['step_time_s']:.2f} s (first), {single_rank['second_step_metrics']['step_time_s']:.2f} s"
        f" (second), subprocess wall {single_rank['wall_s']:.1f} s"
    )


def test_engine_log_probs_match_hf_forward_with_images(single_rank, rollouts):
    """The trainer scores each response exactly as the HF model does on (prompt + image + response)."""
    for row, engine in zip(single_rank["rows"], single_rank["engine_log_probs"]):
        hf = torch.tensor(rollouts[row].rollout_log_probs)
        assert len(engine) == len(hf)
        np.testing.assert_allclose(engine, hf.numpy(), atol=LOG_PROB_ATOL, err_msg=f"rollout {row}")


def test_exported_weights_reproduce_the_updated_policy_in_hf(single_rank, rollouts, tiny_model_dir):
    """Weight sync: the trainer's exported state dict, loaded into a plain HF model (what a rollout worker
    does), scores the batch exactly as the updated engine does."""
    from pipeline.models import load_model, load_processor
    from pipeline.training.batch import encode_prompt

    model = load_model(tiny_model_dir).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(torch.load(single_rank["weights_path"]), strict=True)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    processor = load_processor(tiny_model_dir)
    for row, engine in zip(single_rank["rows"], single_rank["updated_engine_log_probs"]):
        r = rollouts[row]
        hf = _hf_response_log_probs(
            model, encode_prompt(processor, r.messages, r.images), torch.tensor(r.response_ids)
        )
        np.testing.assert_allclose(engine, hf.numpy(), atol=LOG_PROB_ATOL, err_msg=f"rollout {row}")
        assert not np.allclose(engine, r.rollout_log_probs, atol=LOG_PROB_ATOL)  # the update changed them


def test_two_gloo_ranks_match_one_rank(tiny_model_dir, rollouts_file, single_rank, rollouts, tmp_path):
    started = time.perf_counter()
    results = _launch_ranks(2, tiny_model_dir, rollouts_file, tmp_path)
    wall_s = time.perf_counter() - started
    assert sorted(r for res in results for r in res["rows"]) == list(range(len(rollouts)))
    for res in results:
        # Same global token-mean loss and the same averaged gradient as one rank holding the whole batch.
        assert res["metrics"]["loss"] == pytest.approx(single_rank["metrics"]["loss"], rel=1e-4, abs=1e-6)
        assert res["metrics"]["grad_norm"] == pytest.approx(single_rank["metrics"]["grad_norm"], rel=1e-4)
        assert len(res["changed_params"]) == res["num_params"]
        for row, engine in zip(res["rows"], res["engine_log_probs"]):
            np.testing.assert_allclose(engine, rollouts[row].rollout_log_probs, atol=LOG_PROB_ATOL)
    # Both ranks hold the same updated model.
    assert results[0]["param_checksum"] == pytest.approx(results[1]["param_checksum"], rel=1e-9)
    print(
        f"\nverl FSDP2/gloo, 2 ranks: GRPO step {results[0]['metrics']['step_time_s']:.2f} s (first), "
        f"{results[0]['second_step_metrics']['step_time_s']:.2f} s (second), wall {wall_s:.1f} s"
    )


# ---------------------------------------------------------------------------------------------------------
# Batch builder (in-process, no engine)
# ---------------------------------------------------------------------------------------------------------
def test_grpo_batch_layout(rollouts, tiny_model_dir):
    from transformers import AutoConfig

    from pipeline.models import load_processor
    from pipeline.training.batch import build_grpo_batch, to_engine_input

    processor, hf_config = load_processor(tiny_model_dir), AutoConfig.from_pretrained(tiny_model_dir)
    batch = build_grpo_batch(rollouts, processor, hf_config)
    t = batch.batch
    n_resp = torch.tensor([len(r.response_ids) for r in rollouts])
    n_prompt = torch.tensor([len(r.prompt_ids) for r in rollouts])
    prompt_width = t["prompts"].shape[1]

    assert torch.equal(t["response_mask"].sum(1), n_resp)
    assert torch.equal(t["attention_mask"].sum(1), n_prompt + n_resp)
    for b, r in enumerate(rollouts):
        assert t["prompts"][b, prompt_width - n_prompt[b] :].tolist() == list(r.prompt_ids)  # left-padded
        assert t["responses"][b, : n_resp[b]].tolist() == list(r.response_ids)  # right-padded
        assert t["old_log_probs"][b, : n_resp[b]].tolist() == pytest.approx(list(r.rollout_log_probs))
        valid = t["attention_mask"][b].bool()
        assert t["position_ids"][b, 0, valid].tolist() == list(range(int(valid.sum())))  # text positions
        # M-RoPE: image tokens share one temporal position and spread over height/width; text rows agree.
        image_tokens = t["input_ids"][b] == hf_config.image_token_id
        grid_t, grid_h, grid_w = batch.non_tensor_batch["multi_modal_inputs"][b]["image_grid_thw"][0].tolist()
        merge = hf_config.vision_config.spatial_merge_size
        assert int(image_tokens.sum()) == grid_t * grid_h * grid_w // merge**2
        vision_pos = t["position_ids"][b, 1:, image_tokens]
        assert vision_pos[0].unique().numel() == 1
        assert (
            vision_pos[1].unique().numel() == grid_h // merge
            and vision_pos[2].unique().numel() == grid_w // merge
        )
        response_pos = t["position_ids"][b, 1:, prompt_width : prompt_width + n_resp[b]]
        assert torch.equal(response_pos[0], response_pos[1]) and torch.equal(response_pos[0], response_pos[2])
        assert torch.all(response_pos[0].diff() == 1)

    # GRPO: one advantage per answer, zero-mean within each group, none on padding.
    advantages = t["advantages"]
    assert torch.all(advantages[~t["response_mask"].bool()] == 0)
    per_answer = advantages[:, 0]
    for b in range(len(rollouts)):
        assert torch.allclose(advantages[b, : n_resp[b]], per_answer[b].expand(int(n_resp[b])))
    groups = batch.non_tensor_batch["group_id"]
    for g in set(groups):
        members = per_answer[torch.tensor(groups == g)]
        assert members.sum().abs() < 1e-5 and members.abs().min() > 0.5  # rewards differ within each group

    td = to_engine_input(batch)
    assert td["input_ids"].is_nested and torch.equal(td["input_ids"].offsets().diff(), n_prompt + n_resp)
    assert td["position_ids"].is_nested  # (B, 4, j) — verl's 3-D position layout


def test_grpo_batch_encodes_each_distinct_prompt_once(rollouts, tiny_model_dir, monkeypatch):
    import copy

    from transformers import AutoConfig

    import pipeline.training.batch as batch_module
    from pipeline.models import load_processor

    processor, hf_config = load_processor(tiny_model_dir), AutoConfig.from_pretrained(tiny_model_dir)
    # As the trainer receives them: every sample its own copy of the messages and image (Ray deserialises
    # them separately), so equal prompts are recognised by content, not identity.
    copies = [copy.deepcopy(r) for r in rollouts]
    real_encode, calls = batch_module.encode_prompt, []
    monkeypatch.setattr(batch_module, "encode_prompt", lambda *a: calls.append(1) or real_encode(*a))
    batch = batch_module.build_grpo_batch(copies, processor, hf_config)
    assert len(calls) == GROUPS  # not GROUPS * GROUP_SIZE
    for b, r in enumerate(copies):  # each sample still gets its own group's image (sizes differ by group)
        direct = real_encode(processor, r.messages, r.images)
        mm = batch.non_tensor_batch["multi_modal_inputs"][b]
        assert torch.equal(mm["pixel_values"], direct.pixel_values)
        assert torch.equal(mm["image_grid_thw"], direct.image_grid_thw)


def test_engine_input_is_ragged_along_the_sequence_even_when_lengths_are_equal(rollouts, tiny_model_dir):
    from transformers import AutoConfig
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    from pipeline.models import load_processor
    from pipeline.training.batch import build_grpo_batch, to_engine_input

    equal_length_group = rollouts[:GROUP_SIZE]  # group 0: same prompt, same response length
    assert len({len(r.response_ids) for r in equal_length_group}) == 1
    batch = build_grpo_batch(
        equal_length_group, load_processor(tiny_model_dir), AutoConfig.from_pretrained(tiny_model_dir)
    )
    seq_len = int(batch.batch["attention_mask"][0].sum())

    positions = to_engine_input(batch)["position_ids"]
    assert positions._ragged_idx == 2
    assert [tuple(p.shape) for p in positions.unbind()] == [(4, seq_len)] * GROUP_SIZE
    padded = torch.nested.to_padded_tensor(positions, 0, output_size=(GROUP_SIZE, 4, seq_len))
    valid = batch.batch["attention_mask"].bool()
    for b in range(GROUP_SIZE):
        assert torch.equal(padded[b], batch.batch["position_ids"][b][:, valid[b]])

    # Why the workaround exists: verl 0.9.1 itself makes the "4" dimension ragged for this batch. When this
    # assertion fails, verl has fixed it and `_jagged_position_ids` can go.
    td = tu.get_tensordict(
        {k: batch.batch[k] for k in ("input_ids", "attention_mask", "response_mask", "position_ids")}
    )
    assert left_right_2_no_padding(td)["position_ids"]._ragged_idx == 1


def test_grpo_batch_rejects_what_would_corrupt_training(rollouts, tiny_model_dir):
    import dataclasses

    from transformers import AutoConfig

    from pipeline.models import load_processor
    from pipeline.training.batch import build_grpo_batch

    processor, hf_config = load_processor(tiny_model_dir), AutoConfig.from_pretrained(tiny_model_dir)
    good = rollouts[0]
    two_parts_one_image = dataclasses.replace(
        good,
        messages=[
            {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "x"}]}
        ],
    )
    short_log_probs = dataclasses.replace(good, rollout_log_probs=good.rollout_log_probs[:-1])
    other_prompt = dataclasses.replace(good, prompt_ids=[*good.prompt_ids[:-1], good.prompt_ids[-1] + 1])
    for bad, message in [
        (two_parts_one_image, "one image per image part"),
        (short_log_probs, "log-probs for"),
        (other_prompt, "differs from the trainer's encoding"),
    ]:
        with pytest.raises(ValueError, match=message):
            build_grpo_batch([bad, *rollouts[1:]], processor, hf_config)


def test_rollout_from_scored_sample(rollouts):
    from pipeline.sample import Sample
    from pipeline.training.batch import GRPORollout

    r = rollouts[0]
    sample = Sample(task="chart", reference_image=r.images[0], prompt_id="p1", messages=r.messages)
    with pytest.raises(ValueError, match="not ready for training"):
        GRPORollout.from_sample(sample)  # not generated, not scored yet
    sample.prompt_ids, sample.response_ids, sample.response_logprobs = (
        r.prompt_ids,
        r.response_ids,
        r.rollout_log_probs,
    )
    sample.reward = 0.5
    converted = GRPORollout.from_sample(sample)
    assert (converted.group_id, converted.reward, converted.response_ids) == ("p1", 0.5, r.response_ids)
    assert converted.images[0] is r.images[0] and len(converted.images) == 1
    assert converted.prompt_ids == r.prompt_ids


# ---------------------------------------------------------------------------------------------------------
# Platform plugin
# ---------------------------------------------------------------------------------------------------------
def test_cpu_platform_is_selected_by_plugin_env_var():
    """Loaded via VERL_USE_EXTERNAL_MODULES (what the verl.plugins entry point does) and auto-detected here."""
    if torch.cuda.is_available():
        pytest.skip("auto-detection picks the accelerator on a GPU machine")
    code = (
        "from verl.utils.device import get_device_name, get_nccl_backend, get_resource_name, get_torch_device;"
        "print(get_device_name(), get_nccl_backend(), get_resource_name(), get_torch_device().max_memory_allocated() > 0)"
    )
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    env.update(VERL_USE_EXTERNAL_MODULES="pipeline.training.verl_platform", PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-4:] == ["cpu", "gloo", "CPU", "True"]


def test_cpu_platform_never_shadows_an_accelerator():
    from verl.plugin.platform import PlatformBase, PlatformRegistry

    from pipeline.training.verl_platform import PlatformCPU

    class FakeAccelerator(PlatformBase):  # another vendor's platform that reports its device present
        def is_platform_available(self, use_smi_check=False):
            return True

    FakeAccelerator.__abstractmethods__ = frozenset()  # only its detection is exercised
    if not torch.cuda.is_available():
        assert PlatformCPU().is_platform_available(use_smi_check=True) is True
    PlatformRegistry.register("fake-accelerator-for-test")(FakeAccelerator)
    try:
        assert PlatformCPU().is_platform_available(use_smi_check=True) is False
    finally:
        PlatformRegistry._platforms.pop("fake-accelerator-for-test", None)
    assert PlatformCPU().ray_resource_options(2) == {"num_cpus": 2}


def test_excluded_samples_are_masked_and_take_no_part_in_their_groups_advantages(rollouts, tiny_model_dir):
    """Infrastructure failures (Sample.excluded) stay in the batch's shape but carry no loss; a group they
    leave with a single answer is masked whole (GRPO would use that answer's raw reward as its advantage)."""
    import dataclasses

    from transformers import AutoConfig

    from pipeline.models import load_processor
    from pipeline.training.batch import build_grpo_batch

    processor, hf_config = load_processor(tiny_model_dir), AutoConfig.from_pretrained(tiny_model_dir)
    g0a, g0b, g1a, g1b = rollouts
    reference = build_grpo_batch([g0a, g0b], processor, hf_config)
    outlier = dataclasses.replace(g0a, reward=7.0, trainable=False)  # would shift group 0's mean and std
    batch = build_grpo_batch([g0a, g0b, outlier, g1a, dataclasses.replace(g1b, trainable=False)],
                             processor, hf_config)
    mask, adv = batch.batch["response_mask"], batch.batch["advantages"]
    torch.testing.assert_close(adv[:2, : reference.batch["advantages"].shape[1]], reference.batch["advantages"])
    assert mask[2].sum() == 0 and adv[2].abs().sum() == 0
    assert mask[3:].sum() == 0 and adv[3:].abs().sum() == 0  # group 1 kept one trainable answer: masked whole
    assert mask[0].sum() == len(g0a.response_ids)


def test_a_sampled_vision_token_is_a_masked_counted_failure_not_a_crash(rollouts, tiny_model_dir):
    """A response holding a vision special token (the block at sampling should make it impossible) is masked
    out of the update with its response replaced by padding, counted in the batch statistics; its group goes on
    (a group left with one trainable answer is masked whole, as for exclusions)."""
    import dataclasses

    from transformers import AutoConfig

    from pipeline.models import load_processor
    from pipeline.training.batch import build_grpo_batch
    from pipeline.training.metrics import batch_stats

    processor, hf_config = load_processor(tiny_model_dir), AutoConfig.from_pretrained(tiny_model_dir)
    g0a, g0b, g1a, g1b = rollouts
    for token in (hf_config.image_token_id, hf_config.vision_start_token_id):
        broken = dataclasses.replace(g0a, response_ids=[*g0a.response_ids[:-1], token])
        batch = build_grpo_batch([broken, g0b, dataclasses.replace(g0b, reward=g0b.reward + 1.0), g1a, g1b],
                                 processor, hf_config)
        mask, responses = batch.batch["response_mask"], batch.batch["responses"]
        assert mask[0].sum() == 0 and batch.batch["advantages"][0].abs().sum() == 0
        assert token not in batch.batch["input_ids"][0, batch.batch["prompts"].shape[1]:].tolist()
        assert (responses[0] == processor.tokenizer.pad_token_id).all()
        assert mask[1:].sum(dim=1).tolist() == [len(g0b.response_ids)] * 2 + [len(g1a.response_ids),
                                                                             len(g1b.response_ids)]
        assert batch.non_tensor_batch["vision_token"].tolist() == [True, False, False, False, False]
        assert batch_stats(batch)["vision_token_samples"] == 1.0


# ---------------------------------------------------------------------------------------------------------
# Off-policy correction and weight sync, on the same subprocess run
# ---------------------------------------------------------------------------------------------------------
def test_stale_rollouts_get_truncated_importance_weights_in_the_loss(single_rank):
    """Second step: rollouts one policy version old. pi_trainer / pi_rollout is no longer 1, the cap truncates
    some tokens, and verl's PPO loss takes the weights (pg_loss equals the weighted value, not the plain one)."""
    m = single_rank["second_step_metrics"]
    assert m["rollout_log_prob_abs_diff"] > 1e-4
    assert m["rollout_ratio_min"] < 1.0 < m["rollout_ratio_max"]
    assert 0.0 < m["rollout_is_clipped_frac"] < 1.0
    assert m["rollout_is_weight_mean"] < m["rollout_ratio_mean"]  # truncation only lowers weights
    expected = single_rank["second_step_expected_pg_loss"]
    assert abs(expected["weighted"] - expected["unweighted"]) > 1e-5
    assert m["pg_loss"] == pytest.approx(expected["weighted"], rel=1e-4, abs=1e-7)
    print(f"\nstale by one version: ratio {m['rollout_ratio_min']:.4f}..{m['rollout_ratio_max']:.4f} (mean "
          f"{m['rollout_ratio_mean']:.5f}), IS weight mean {m['rollout_is_weight_mean']:.5f}, cut by the cap "
          f"{m['rollout_is_clipped_frac']:.2f}; pg_loss {m['pg_loss']:.6f} = weighted {expected['weighted']:.6f} "
          f"(unweighted {expected['unweighted']:.6f})")
    # First step, on-policy: no IS configured, the ratio is 1 to float precision.
    first = single_rank["metrics"]
    assert "rollout_is_weight_mean" not in first
    assert first["rollout_ratio_mean"] == pytest.approx(1.0, abs=1e-4)


def test_a_weight_sync_leaves_the_rollout_with_exactly_the_trainers_weights(single_rank, tiny_model_dir):
    """The trainer's export loaded through the rollout seam (`Rollout.load_weights`, HF backend): every engine
    parameter equals the trainer's afterwards (a dropped or misnamed tensor would stay stale), in fp32 and with
    bf16 on the wire."""
    from pipeline.models.config import ModelConfig, ModelsConfig
    from pipeline.rollout import HFRollout
    from pipeline.rollout.config import SamplingConfig

    rollout = HFRollout(ModelsConfig(policy=ModelConfig(path=str(tiny_model_dir))), SamplingConfig(n=1))
    parameters = {name for name, _ in rollout.model.named_parameters()}
    before = {k: v.clone() for k, v in rollout.model.state_dict().items()}
    for version, key, dtype in ((1, "weights_path", torch.float32), (2, "bf16_weights_path", torch.bfloat16)):
        sent = torch.load(single_rank[key])
        assert {t.dtype for t in sent.values() if t.is_floating_point()} == {dtype}
        rollout.load_weights(sent, version=version)
        engine = rollout.model.state_dict()
        assert parameters <= set(sent) <= set(engine), sorted(parameters - set(sent))
        for name, tensor in sent.items():
            assert torch.equal(engine[name], tensor.to(engine[name].dtype)), name
            if dtype == torch.float32 and name in parameters:  # every parameter moved in the update (bf16
                assert not torch.equal(engine[name], before[name]), f"{name} is stale"  # may round back)
        assert rollout.version == version


def test_the_reference_engine_holds_compute_dtype_weights_and_its_own_micro_batch(tiny_model_dir):
    """A forward-only engine (the frozen reference) keeps no fp32 master copy: under the GPU presets' bf16 it
    holds bf16 weights (half the memory, and half the host transfer when verl offloads it); its micro-batch is a
    setting of its own. On CPU (fp32 compute) nothing changes."""
    from pipeline.training.config import TrainerConfig
    from pipeline.training.engine import build_training_worker_config

    gpu = TrainerConfig(param_dtype="bfloat16", micro_batch_size_per_device=2, infer_micro_batch_size_per_device=8)
    reference = build_training_worker_config(tiny_model_dir, gpu, forward_only=True).engine_config
    policy = build_training_worker_config(tiny_model_dir, gpu).engine_config
    assert (reference.model_dtype, policy.model_dtype) == ("bf16", "fp32")
    assert (reference.infer_micro_batch_size_per_gpu, policy.micro_batch_size_per_gpu) == (8, 2)
    cpu = build_training_worker_config(tiny_model_dir, TrainerConfig(), forward_only=True).engine_config
    assert (cpu.model_dtype, cpu.infer_micro_batch_size_per_gpu) == ("fp32", TrainerConfig().micro_batch_size_per_device)
