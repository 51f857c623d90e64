"""The vLLM rollout backend on a real engine: GPU machines with the vllm extra (`pip install .[gpu]`).

Everywhere else these tests skip with the reason. The same bookkeeping (prompt and image in; tokens, log-probs,
text, version out; weight loads, sleep/wake) runs on CPU in tests/test_rollout.py against a stand-in engine.
The model is the tiny Qwen3-VL the session builds and saves to disk (no download).
"""

from __future__ import annotations

import multiprocessing
import socket

import numpy as np
import pytest
import torch

from pipeline.rollout.config import SamplingConfig, VLLMRolloutConfig
from pipeline.rollout.vllm import vllm_import_error
from pipeline.sample import Sample
from tests.logprobs import teacher_forced_logprobs

VLLM_ERROR = vllm_import_error()
pytestmark = [
    pytest.mark.skipif(VLLM_ERROR is not None,
                       reason=f"vLLM is not importable here ({VLLM_ERROR}): a GPU-only optional extra"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible: vLLM needs one"),
]
# Small engine: the tiny model needs almost nothing, and a shared GPU may hold other tests' engines.
ENGINE = VLLMRolloutConfig(gpu_memory_utilization=0.25, max_model_len=2048, max_num_seqs=16, enforce_eager=True)
SUBPROCESS_TIMEOUT_S = 300


def _prompt(i: int) -> Sample:
    rng = np.random.default_rng(i)
    return Sample(
        task="chart",
        reference_image=rng.integers(0, 255, (64 + 16 * i, 96, 3), dtype=np.uint8),
        prompt_id=f"p{i}",
        messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Code, please."}]}],
    )


@pytest.fixture(scope="module")
def engine(models_cfg):
    from pipeline.rollout.vllm import VLLMRollout

    rollout = VLLMRollout(models_cfg, SamplingConfig(n=3, max_new_tokens=16, temperature=0.8), ENGINE, seed=0)
    yield rollout
    del rollout


@pytest.fixture(scope="module")
def hf_model(models_cfg):
    from pipeline.models import load_model_and_processor

    model, processor = load_model_and_processor(models_cfg.policy)
    return model.to("cuda").eval(), processor


def _perturbed(model, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {k: (v.cpu() + 0.5 * torch.randn(v.shape, generator=generator, dtype=v.dtype)) if v.is_floating_point()
            else v.cpu() for k, v in model.state_dict().items()}


def test_generates_groups_from_images(engine):
    out = engine.generate([_prompt(0), _prompt(1)])
    assert [s.prompt_id for s in out] == ["p0"] * 3 + ["p1"] * 3
    assert len({s.uid for s in out}) == 6
    for s in out:
        assert 0 < len(s.response_ids) <= 16
        assert len(s.response_logprobs) == len(s.response_ids)
        assert all(lp <= 0 for lp in s.response_logprobs)
        assert s.policy_version == 0 and isinstance(s.response_text, str)
    # Different images give different prompts (the image placeholder is expanded per image size).
    assert out[0].prompt_ids != out[3].prompt_ids


def test_logprobs_match_the_hf_forward(engine, hf_model):
    """vLLM's sampled-token log-probs against a teacher-forced transformers forward at the same temperature.
    Tolerance: kernels differ, and the never-sampled tokens are hard-blocked (bad_words) on the vLLM side, so its
    processed log-probs are renormalised without them (a few tenths of a percent of mass on the tiny model)."""
    model, processor = hf_model
    temperature = 0.8
    sample = engine.generate([_prompt(2)], n=2)[1]
    prompt_ids, expected, _ = teacher_forced_logprobs(model, processor, sample, temperature, device="cuda")
    # The engine expanded the image placeholder exactly as the HF processor (and so the trainer) does.
    assert prompt_ids == sample.prompt_ids
    np.testing.assert_allclose(sample.response_logprobs, expected, atol=2e-2)


def test_weight_update_changes_outputs_and_version(engine, hf_model):
    model, _ = hf_model
    before = engine.generate([_prompt(3)], n=1, greedy=True)[0]
    engine.load_weights(_perturbed(model, seed=1), version=4)
    after = engine.generate([_prompt(3)], n=1, greedy=True)[0]
    assert before.policy_version == 0 and after.policy_version == 4
    assert after.response_logprobs != before.response_logprobs


def test_sleep_then_generate_wakes_with_the_same_weights(models_cfg, hf_model):
    """Colocated mode: level-1 sleep offloads the weights and frees the KV cache; generate wakes the engine."""
    from pipeline.rollout.vllm import VLLMRollout

    colocated = VLLMRollout(models_cfg, SamplingConfig(n=1, max_new_tokens=12),
                            ENGINE.model_copy(update={"enable_sleep_mode": True}), seed=0)
    try:
        before = colocated.generate([_prompt(5)], greedy=True)[0]
        free_awake = torch.cuda.mem_get_info()[0]
        colocated.sleep(level=1)
        assert colocated.asleep and torch.cuda.mem_get_info()[0] > free_awake  # the KV cache went away
        after = colocated.generate([_prompt(5)], greedy=True)[0]
        assert not colocated.asleep
        assert after.response_ids == before.response_ids
    finally:
        del colocated


# ---------------------------------------------------------------------------------------------------------
# NCCL weight sync: a sender process on a second GPU plays trainer rank 0.
# ---------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _send_weights(port: int, state_dict: dict, done) -> None:
    from pipeline.rollout.weight_sync import broadcast_weights, init_weight_group, weight_meta

    torch.cuda.set_device(1)
    group = init_weight_group("127.0.0.1", port, 0, 2, torch.device("cuda", 1), timeout_s=SUBPROCESS_TIMEOUT_S)
    meta = weight_meta(((k, v.shape, v.dtype) for k, v in state_dict.items()), torch.float32)
    stats = broadcast_weights(group, ((k, v.to("cuda")) for k, v in state_dict.items()), torch.float32, meta)
    done.put(stats)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL weight sync needs two GPUs (one rank per GPU)")
def test_nccl_broadcast_loads_the_same_weights_as_the_object_store(engine, hf_model):
    model, _ = hf_model
    state = _perturbed(model, seed=2)
    port = _free_port()
    context = multiprocessing.get_context("spawn")
    done = context.Queue()
    sender = context.Process(target=_send_weights, args=(port, state, done), daemon=True)
    sender.start()
    try:
        assert engine.init_weight_group("127.0.0.1", port, 1, 2) == [1]
        received = engine.receive_weights(version=7)
        stats = done.get(timeout=SUBPROCESS_TIMEOUT_S)
    finally:
        sender.join(timeout=SUBPROCESS_TIMEOUT_S)
        if sender.is_alive():
            sender.kill()
    assert received == len(state) == stats["tensors"]
    via_nccl = engine.generate([_prompt(4)], n=1, greedy=True)[0]
    assert via_nccl.policy_version == 7
    engine.load_weights(state, version=8)
    via_store = engine.generate([_prompt(4)], n=1, greedy=True)[0]
    assert via_nccl.response_ids == via_store.response_ids
    np.testing.assert_allclose(via_nccl.response_logprobs, via_store.response_logprobs, atol=1e-5)
