"""The rollout seam on CPU: the HF backend (n responses per prompt, log-probs that match a teacher-forced forward
pass), the bookkeeping both backends share, backend selection, start-up errors, and the vLLM backend's and the
NCCL sync's logic against stand-ins (the real engine: tests/test_rollout_vllm.py, GPU only)."""

import types

import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.rollout import HFRollout, Rollout, RolloutUnavailable, make_rollout
from pipeline.rollout.base import (
    cut_at_stop,
    expand_groups,
    fill_response,
    never_sampled_token_ids,
    stop_token_ids,
    vision_token_ids,
)
from pipeline.rollout.config import RolloutConfig, SamplingConfig, VLLMRolloutConfig
from pipeline.rollout.vllm import VLLMRollout, bad_words_for, sampled_token_logprobs, vllm_import_error
from pipeline.sample import Sample
from pipeline.schema import ConfigError
from tests.logprobs import teacher_forced_logprobs


def _prompt(i):
    rng = np.random.default_rng(i)
    return Sample(
        task="chart",
        reference_image=rng.integers(0, 255, (64 + 16 * i, 96, 3), dtype=np.uint8),  # sizes differ
        prompt_id=f"p{i}",
        messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Code, please."}]}],
    )


def test_groups_tokens_and_logprobs(models_cfg):
    rollout = HFRollout(models_cfg, SamplingConfig(n=3, max_new_tokens=24, temperature=1.0))
    out = rollout.generate([_prompt(0), _prompt(1)])
    assert len(out) == 6
    assert [s.prompt_id for s in out] == ["p0"] * 3 + ["p1"] * 3
    assert len({s.uid for s in out}) == 6
    for s in out:
        assert 0 < len(s.response_ids) <= 24
        assert len(s.response_logprobs) == len(s.response_ids)
        assert all(lp <= 0 for lp in s.response_logprobs)
        assert s.policy_version == 0 and isinstance(s.response_text, str)
    # group members do not share mutable fields
    out[0].reward_breakdown["x"] = 1.0
    assert out[1].reward_breakdown == {}


def test_logprobs_match_teacher_forced_forward(models_cfg):
    temperature = 0.7
    rollout = HFRollout(models_cfg, SamplingConfig(n=2, max_new_tokens=16, temperature=temperature))
    sample = rollout.generate([_prompt(2)])[1]
    prompt_ids, expected, _ = teacher_forced_logprobs(rollout.model, rollout.processor, sample, temperature)
    assert prompt_ids == sample.prompt_ids
    np.testing.assert_allclose(sample.response_logprobs, expected, atol=2e-3)


def test_weight_sync_changes_outputs_and_version(models_cfg):
    rollout = HFRollout(models_cfg, SamplingConfig(n=1, max_new_tokens=8, temperature=0.0))
    before = rollout.generate([_prompt(3)])[0]
    state = {k: v + 0.5 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in rollout.model.state_dict().items()}
    rollout.load_weights(state, version=4)
    after = rollout.generate([_prompt(3)])[0]
    assert after.policy_version == 4 and before.policy_version == 0
    assert after.response_logprobs != before.response_logprobs


# ---------------------------------------------------------------------------------------------------------
# The rollout seam: one interface, shared bookkeeping, backend selection, start-up errors
# ---------------------------------------------------------------------------------------------------------
VLLM_ERROR = vllm_import_error()


def test_cut_at_stop_keeps_the_first_stop_token_and_drops_the_rest():
    assert cut_at_stop([5, 6, 2, 0, 0], [2]) == 3
    assert cut_at_stop([5, 7, 6, 2], [2, 7]) == 2  # any of several eos ids (Qwen3-VL has two)
    assert cut_at_stop([5, 6, 8], [2]) == 3  # ran out of tokens: the whole response
    assert cut_at_stop([], [2]) == 0


def test_stop_and_never_sampled_ids_come_from_the_generation_config():
    tokenizer = types.SimpleNamespace(eos_token_id=9)
    assert stop_token_ids(types.SimpleNamespace(eos_token_id=[151645, 151643]), tokenizer) == [151645, 151643]
    assert stop_token_ids(types.SimpleNamespace(eos_token_id=2), tokenizer) == [2]
    assert stop_token_ids(None, tokenizer) == [9]  # no generation_config.json
    with pytest.raises(ValueError, match="no eos token"):
        stop_token_ids(None, types.SimpleNamespace(eos_token_id=None))
    assert never_sampled_token_ids(types.SimpleNamespace(suppress_tokens=[0, 4])) == [0, 4]
    assert never_sampled_token_ids(types.SimpleNamespace(suppress_tokens=None)) == []


def test_fill_response_cuts_decodes_and_tags(models_cfg):
    rollout = HFRollout(models_cfg, SamplingConfig(n=1, max_new_tokens=4))
    tokenizer = rollout.processor.tokenizer
    eos = rollout.stop_ids[0]
    body = tokenizer.encode("plt.plot(x)")
    [sample] = expand_groups([_prompt(0)], 1)
    fill_response(sample, [1, 2, 3], body + [eos, 0, 0], [-0.5] * (len(body) + 3), tokenizer, rollout.stop_ids, 7)
    assert sample.response_ids == body + [eos]
    assert sample.response_logprobs == [-0.5] * (len(body) + 1)
    assert sample.response_text == "plt.plot(x)"  # the eos is a special token: not in the text
    assert sample.prompt_ids == [1, 2, 3] and sample.policy_version == 7
    with pytest.raises(ValueError, match="log-probs for"):
        fill_response(sample, [1], [4, 5], [-0.1], tokenizer, rollout.stop_ids, 0)


def test_make_rollout_picks_the_backend_by_name(models_cfg):
    rollout = make_rollout(models_cfg, RolloutConfig(sampling=SamplingConfig(n=1, max_new_tokens=4)), "cpu", 0)
    assert isinstance(rollout, HFRollout) and isinstance(rollout, Rollout)
    assert rollout.version == 0


@pytest.mark.skipif(VLLM_ERROR is None, reason="vLLM is installed here: the missing-vLLM error cannot be seen")
def test_vllm_backend_without_vllm_is_a_clear_error(models_cfg):
    cfg = RolloutConfig(backend="vllm", num_gpus=1)
    with pytest.raises(RolloutUnavailable, match=r"rollout.backend=vllm needs the vllm extra: pip install \.\[gpu\]"):
        make_rollout(models_cfg, cfg, "cuda", 0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["rollout.weight_sync=nccl"], "needs rollout.backend=vllm"),
        (["rollout.backend=vllm"], r"needs rollout.num_gpus >= rollout.vllm.tensor_parallel_size \(1\)"),
        (["rollout.backend=vllm", "rollout.num_gpus=1", "rollout.vllm.tensor_parallel_size=2"],
         r"tensor_parallel_size \(2\)"),
        (["rollout.backend=vllm", "rollout.num_gpus=0", "rollout.vllm.tensor_parallel_size=1",
          "rollout.weight_sync=nccl"], "num_gpus"),
        (["rollout.backend=vllm", "rollout.num_gpus=1", "rollout.weight_sync=nccl",
          "rollout.vllm.enable_sleep_mode=true"], "NCCL cannot pair two processes on one GPU"),
    ],
)
def test_rollout_config_errors_at_start_up(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_valid_gpu_rollout_configs_load():
    cfg = load_config(None, ["rollout.backend=vllm", "rollout.num_gpus=2", "rollout.vllm.tensor_parallel_size=2",
                             "rollout.weight_sync=nccl", "trainer.num_gpus_per_rank=1"])
    assert cfg.rollout.weight_sync == "nccl" and cfg.rollout.vllm.tensor_parallel_size == 2
    with pytest.raises(ConfigError, match="needs GPU trainer ranks"):  # the same on CPU trainer ranks
        load_config(None, ["rollout.backend=vllm", "rollout.num_gpus=2", "rollout.vllm.tensor_parallel_size=2",
                           "rollout.weight_sync=nccl"])
    colocated = load_config(None, ["rollout.backend=vllm", "rollout.num_gpus=1",
                                   "rollout.vllm.enable_sleep_mode=true", "stream.max_staleness=0"])
    assert colocated.rollout.weight_sync == "object_store"


def test_nccl_weight_sync_needs_gpu_trainer_ranks(policy_dir):
    from actors.trainer import TrainerError, TrainerGroup
    from pipeline.training.config import TrainerConfig

    # Refused before any placement or actor: the check needs no Ray.
    with pytest.raises(TrainerError, match="needs GPU trainer ranks"):
        TrainerGroup(TrainerConfig(num_gpus_per_rank=0), policy_dir, 2, weight_sync="nccl")


# ---------------------------------------------------------------------------------------------------------
# The vLLM backend's bookkeeping on CPU: a stand-in engine that answers what the HF backend sampled must give
# the same Samples (prompt text and image in, tokens / log-probs / text / version out, stop handling).
# ---------------------------------------------------------------------------------------------------------
class FakeLLM:
    """Answers `generate` like vllm.LLM would, replaying given responses; records every call."""

    def __init__(self, responses, prompt_ids, stop_ids, trailing=(0, 0)):
        self.responses, self.prompt_ids, self.stop_ids = responses, prompt_ids, stop_ids
        self.trailing = list(trailing)
        self.requests, self.params, self.rpc, self.calls = None, None, [], []

    def generate(self, requests, params, use_tqdm=False):
        self.requests, self.params = requests, params
        outputs = []
        for i, _request in enumerate(requests):
            completions = []
            for j, (ids, logprobs) in enumerate(self.responses[i]):
                # Tokens reported past a stop token (here: padding after eos) are cut by fill_response.
                trailing = self.trailing if ids and ids[-1] in self.stop_ids else []
                token_ids = list(ids) + trailing
                lps = list(logprobs) + [-1.0] * len(trailing)
                entries = [{t: types.SimpleNamespace(logprob=lp, rank=1)} for t, lp in zip(token_ids, lps)]
                completions.append(types.SimpleNamespace(index=j, token_ids=token_ids, logprobs=entries))
            outputs.append(types.SimpleNamespace(prompt_token_ids=self.prompt_ids[i],
                                                 outputs=list(reversed(completions))))  # any order
        return outputs

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        assert timeout is not None and timeout > 0  # every engine RPC is bounded
        self.rpc.append((method, args or kwargs))
        return [len(args[0])] if args else [None]

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")

    @property
    def llm_engine(self):
        return types.SimpleNamespace(reset_encoder_cache=lambda: self.calls.append("reset_encoder_cache"))

    def sleep(self, level):
        self.calls.append(f"sleep{level}")

    def wake_up(self):
        self.calls.append("wake_up")


def _fake_vllm_rollout(hf: HFRollout, llm: FakeLLM, sleep_mode: bool = False) -> VLLMRollout:
    rollout = object.__new__(VLLMRollout)  # everything but the engine, which needs vLLM and a GPU
    rollout.sampling = hf.sampling
    rollout.engine_cfg = VLLMRolloutConfig(enable_sleep_mode=sleep_mode)
    rollout.processor, rollout.stop_ids = hf.processor, hf.stop_ids
    rollout.never_sampled = hf.never_sampled
    rollout.bad_words = bad_words_for(hf.processor.tokenizer, hf.never_sampled)
    rollout._vllm = types.SimpleNamespace(SamplingParams=lambda **kw: kw)
    rollout.llm, rollout.version, rollout.asleep = llm, 0, False
    rollout.timeout_s, rollout.tensor_parallel_size, rollout.handshake = 30.0, 1, None
    return rollout


def test_vllm_bookkeeping_gives_the_same_samples_as_hf(models_cfg):
    hf = HFRollout(models_cfg, SamplingConfig(n=2, max_new_tokens=12, temperature=0.8, top_p=1.0))
    prompts = [_prompt(4), _prompt(5)]
    reference = hf.generate(prompts)
    responses = [[(s.response_ids, s.response_logprobs) for s in reference[i * 2:(i + 1) * 2]] for i in range(2)]
    # One response ends at eos (whatever the random model did), so the stop handling is exercised.
    eos = hf.stop_ids[0]
    ids, lps = responses[0][1]
    responses[0][1] = (ids[:3] + [eos], lps[:4])
    reference[1].response_ids, reference[1].response_logprobs = ids[:3] + [eos], lps[:4]
    reference[1].response_text = hf.processor.tokenizer.decode(ids[:3] + [eos], skip_special_tokens=True)
    llm = FakeLLM(responses, prompt_ids=[reference[0].prompt_ids, reference[2].prompt_ids], stop_ids=hf.stop_ids)
    rollout = _fake_vllm_rollout(hf, llm)
    out = rollout.generate(prompts)

    # What went into the engine: the chat-template text with the image placeholder and the image itself.
    for request, prompt in zip(llm.requests, prompts):
        assert request["prompt"] == hf.processor.apply_chat_template(prompt.messages, add_generation_prompt=True,
                                                                     tokenize=False)
        images = request["multi_modal_data"]["image"]  # one per image part: here only the reference
        assert len(images) == 1
        np.testing.assert_array_equal(np.asarray(images[0]), prompt.reference_image)
    params = llm.params
    assert params["n"] == 2 and params["temperature"] == 0.8 and params["max_tokens"] == 12
    assert params["logprobs"] == 0 and params["top_k"] == 0 and params["stop_token_ids"] == hf.stop_ids
    # A hard block (bad words, one token each), not a logit bias.
    assert "logit_bias" not in params
    assert params["bad_words"] == [hf.processor.tokenizer.convert_ids_to_tokens(t) for t in hf.never_sampled]

    fields = ("prompt_id", "prompt_ids", "response_ids", "response_logprobs", "response_text", "policy_version")
    assert len(out) == len(reference) == 4
    for a, b in zip(out, reference):
        for name in fields:
            assert getattr(a, name) == getattr(b, name), name
    assert len({s.uid for s in out}) == 4



def test_vllm_greedy_params_and_weight_load_and_sleep(models_cfg):
    hf = HFRollout(models_cfg, SamplingConfig(n=1, max_new_tokens=4, temperature=1.0, top_p=0.9, top_k=20))
    llm = FakeLLM([[([5, hf.stop_ids[0]], [-0.1, -0.2])]], prompt_ids=[[1, 2]], stop_ids=hf.stop_ids)
    rollout = _fake_vllm_rollout(hf, llm, sleep_mode=True)
    rollout.generate([_prompt(6)])
    assert llm.params["top_p"] == 0.9 and llm.params["top_k"] == 20
    greedy = rollout.generate([_prompt(6)], n=3, greedy=True)
    assert llm.params["temperature"] == 0.0 and llm.params["top_p"] == 1.0 and llm.params["top_k"] == 0
    assert llm.params["n"] == 1  # greedy: one engine answer, repeated for the group
    assert len(greedy) == 3 and len({s.uid for s in greedy}) == 3
    assert all(s.response_ids == [5, hf.stop_ids[0]] for s in greedy)

    # Sleep mode: a sleeping engine is woken before it generates or loads weights.
    rollout.sleep(level=1)
    rollout.sleep(level=1)  # idempotent
    assert llm.calls == ["sleep1"] and rollout.asleep
    state = {k: v.clone() for k, v in hf.model.state_dict().items()}
    rollout.load_weights(state, version=3)
    # Old prefix KV blocks and cached image embeddings are dropped.
    assert llm.calls == ["sleep1", "wake_up", "reset_prefix_cache", "reset_encoder_cache"]
    assert rollout.version == 3
    # The chunks load inside vLLM's layerwise reload (post-load processing), begun and finished once.
    methods = [method for method, _ in llm.rpc]
    assert methods[0] == "begin_weight_load" and methods[-1] == "finish_weight_load"
    assert set(methods[1:-1]) == {"load_state_dict_items"}
    shipped = [item for method, args in llm.rpc if method == "load_state_dict_items" for item in args[0]]
    assert [name for name, _ in shipped] == list(state)
    assert all(t.device.type == "cpu" for _, t in shipped)
    [sample] = rollout.generate([_prompt(6)])
    assert sample.policy_version == 3


def test_sampled_token_logprobs_refuses_incomplete_engine_output():
    ok = types.SimpleNamespace(token_ids=[7, 2], logprobs=[{7: types.SimpleNamespace(logprob=-0.3)},
                                                           {2: types.SimpleNamespace(logprob=-1.5)}])
    assert sampled_token_logprobs(ok) == [-0.3, -1.5]
    with pytest.raises(RuntimeError, match="no log-probs"):
        sampled_token_logprobs(types.SimpleNamespace(token_ids=[7], logprobs=None))
    with pytest.raises(RuntimeError, match="lack the sampled token 7"):
        sampled_token_logprobs(types.SimpleNamespace(token_ids=[7], logprobs=[{8: ok.logprobs[0][7]}]))


def test_nccl_sync_orchestration_ranks_offsets_and_versions():
    """The driver side of rollout.weight_sync=nccl with stand-in actors (the real one needs GPUs and vLLM):
    one group of 1 + Σ tp ranks, each engine at its offset, every trainer rank gathering, workers adopting
    the trainer's version; the group is built once."""
    from actors.trainer import TrainerGroup
    from pipeline.rollout.weight_sync import WeightSyncError
    from pipeline.training.config import TrainerConfig

    calls = []

    class Method:
        def __init__(self, owner, name, result):
            self.owner, self.name, self.result = owner, name, result

        def remote(self, *args):
            calls.append((self.owner, self.name, args))
            return self.result(*args) if callable(self.result) else self.result

    class Actor:
        def __init__(self, label, **methods):
            self.label = label
            for name, result in methods.items():
                setattr(self, name, Method(label, name, result))

    ranks = [Actor("rank0", rendezvous_address=("10.0.0.1", 4242), init_weight_group=None,
                   broadcast_weights={"tensors": 3.0, "bytes": 96.0}),
             Actor("rank1", broadcast_weights={"tensors": 3.0, "bytes": 0.0})]
    workers = [Actor(f"worker{i}", weight_group_ranks=tp, init_weight_group=None, ready=True,
                     receive_weights=lambda version: 3) for i, tp in enumerate((2, 1))]
    group = object.__new__(TrainerGroup)
    group.cfg, group.ranks, group.version = TrainerConfig(num_gpus_per_rank=1), ranks, 5
    group.weight_sync, group.weight_dtype, group._weight_group_members = "nccl", "bfloat16", None
    group._get = lambda refs, what, timeout_s=None: list(refs)

    metrics = group.sync_weights(workers)
    inits = [(owner, args) for owner, name, args in calls if name == "init_weight_group"]
    assert inits == [("rank0", ("10.0.0.1", 4242, 4)), ("worker0", ("10.0.0.1", 4242, 1, 4)),
                     ("worker1", ("10.0.0.1", 4242, 3, 4))]
    assert [(o, a) for o, n, a in calls if n == "broadcast_weights"] == [("rank0", ("bfloat16",)),
                                                                        ("rank1", ("bfloat16",))]
    assert [(o, a) for o, n, a in calls if n == "receive_weights"] == [("worker0", (5,)), ("worker1", (5,))]
    assert metrics["synced_version"] == 5.0 and metrics["weight_sync_bytes"] == 96.0

    calls.clear()
    group.version = 6
    group.sync_weights(workers)
    assert not [c for c in calls if c[1] == "init_weight_group"]  # built once
    with pytest.raises(WeightSyncError, match="rollout workers changed"):  # saved, then exit 1
        group.sync_weights(workers[:1])


def test_vllm_gets_a_view_of_the_tiny_model_with_the_stock_processor_class(policy_dir, tmp_path):
    import json

    from pipeline.rollout.vllm import vllm_model_dir

    views = tmp_path / "views"
    view = vllm_model_dir(policy_dir, views)
    # Built in a writable cache, not beside the checkpoint (a trained critic is often mounted read-only).
    assert view != policy_dir and view.parent == views and not any(policy_dir.parent.glob(policy_dir.name + "-*"))
    assert json.loads((view / "processor_config.json").read_text())["processor_class"] == "Qwen3VLProcessor"
    assert (view / "model.safetensors").resolve() == (policy_dir / "model.safetensors").resolve()
    assert vllm_model_dir(policy_dir, views) == view  # idempotent (several workers prepare it)
    # A real checkpoint (stock processor class) is handed over unchanged.
    (tmp_path / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen3VLProcessor"}))
    assert vllm_model_dir(tmp_path) == tmp_path


# ---------------------------------------------------------------------------------------------------------
# Vision special tokens: hard-blocked at sampling by both backends; one that appears anyway is a counted failure
# ---------------------------------------------------------------------------------------------------------
def test_vision_tokens_are_never_sampled_even_when_the_model_prefers_them(models_cfg):
    """A real checkpoint's generation config suppresses nothing: the block comes from the model config's vision
    token ids. The logits are pushed hard towards those tokens; none is sampled, and the reported log-probs are
    still the raw (unsuppressed) ones the trainer recomputes."""
    hf = HFRollout(models_cfg, SamplingConfig(n=3, max_new_tokens=6, temperature=1.0))
    vision = vision_token_ids(hf.model.config)
    assert len(vision) == 4
    hf.model.generation_config.suppress_tokens = None  # as in Qwen3-VL-8B's generation_config.json
    hf.never_sampled = never_sampled_token_ids(hf.model.generation_config, hf.model.config)
    assert set(hf.never_sampled) == vision

    def prefer_vision(_module, _inputs, logits):
        logits = logits.clone()
        logits[..., sorted(vision)] += 80.0
        return logits

    handle = hf.model.lm_head.register_forward_hook(prefer_vision)
    try:
        out = hf.generate([_prompt(7), _prompt(8)])
    finally:
        handle.remove()
    for s in out:
        assert vision.isdisjoint(s.response_ids) and s.failure is None
        assert all(lp < -40 for lp in s.response_logprobs), s.response_logprobs  # raw mass kept


def test_never_sampled_ids_cover_the_config_vision_tokens_and_suppress_tokens(models_cfg):
    config = types.SimpleNamespace(image_token_id=10, video_token_id=11,
                                   text_config=types.SimpleNamespace(vision_start_token_id=12))
    assert vision_token_ids(config) == {10, 11, 12}
    assert never_sampled_token_ids(types.SimpleNamespace(suppress_tokens=[3, 10]), config) == [3, 10, 11, 12]


def test_bad_words_block_exactly_one_token_each(models_cfg):
    hf = HFRollout(models_cfg, SamplingConfig(n=1, max_new_tokens=2))
    tokenizer = hf.processor.tokenizer
    words = bad_words_for(tokenizer, sorted(vision_token_ids(hf.model.config)))
    assert "<|vision_start|>" in words and "<|image_pad|>" in words
    assert [tokenizer.encode(w, add_special_tokens=False) for w in words] == \
        [[t] for t in sorted(vision_token_ids(hf.model.config))]
    multi = tokenizer.encode("plt.plot", add_special_tokens=False)
    # A byte-level piece whose text re-encodes differently cannot be a one-token bad word: refused loudly.
    unblockable = next(t for t in range(len(tokenizer))
                       if tokenizer.encode(tokenizer.convert_ids_to_tokens(t), add_special_tokens=False) != [t])
    with pytest.raises(ValueError, match="does not tokenize back"):
        bad_words_for(tokenizer, [unblockable])
    assert len(multi) >= 1


def test_a_vision_token_that_slips_through_is_a_counted_policy_failure(models_cfg):
    hf = HFRollout(models_cfg, SamplingConfig(n=1, max_new_tokens=8, temperature=0.8))
    image_token = hf.model.config.image_token_id
    eos = hf.stop_ids[0]
    a, b = hf.processor.tokenizer.encode("plt.plot", add_special_tokens=False)[:2]
    llm = FakeLLM([[([a, image_token, b, eos], [-0.1, -0.2, -0.3, -0.4])], [([a, b, eos], [-0.1] * 3)]],
                  prompt_ids=[[1, 2], [1, 3]], stop_ids=hf.stop_ids)
    rollout = _fake_vllm_rollout(hf, llm)
    broken, fine = rollout.generate([_prompt(9), _prompt(10)], n=1)
    assert broken.failure == "rollout:vision_token" and broken.response_ids == [a, image_token, b, eos]
    assert fine.failure is None
