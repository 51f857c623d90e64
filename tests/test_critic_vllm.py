"""vLLM backend (GPU-only optional extra). Where vLLM is absent the real-engine test skips with the reason;
the absence itself must surface as BackendUnavailable (a clear message), never an ImportError deep inside."""

from typing import ClassVar

import pytest

from pipeline.critic.backends.base import BackendUnavailable
from pipeline.critic.backends.vllm import vllm_available
from pipeline.critic.config import RewardConfig
from pipeline.critic.testing import random_samples, tiny_reward_config

HAVE_VLLM, WHY = vllm_available()


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed: the missing-vLLM path cannot be exercised here")
def test_missing_vllm_is_a_clear_backend_unavailable(models_cfg):
    from pipeline.critic.backends import make_backend

    with pytest.raises(BackendUnavailable, match="GPU-only optional extra"):
        make_backend(RewardConfig(backend="vllm"), models_cfg.reward)


@pytest.mark.skipif(not HAVE_VLLM, reason=WHY or "vLLM not installed")
def test_vllm_backend_gives_schema_valid_judgements(models_cfg):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM is installed but no GPU is visible")
    from pipeline.critic.scorer import RewardScorer

    cfg = tiny_reward_config(backend="vllm", vllm={"gpu_memory_utilization": 0.2, "max_model_len": 2048,
                                                   "enforce_eager": True})
    scorer = RewardScorer(cfg, models_cfg)
    try:
        samples = random_samples(30, seed=21)
        stats = scorer.score(samples)
    finally:
        scorer.close()
    assert stats["invalid_judgements"] == 0
    assert all(s.extra["judgement"]["valid"] and s.reward is not None for s in samples)


# ---------------------------------------------------------------------------------------------------------
# The backend's own logic against a stand-in vLLM (no GPU): engine arguments, the async engine's event loop,
# per-request seeds, retries of greedy tasks.
# ---------------------------------------------------------------------------------------------------------
class _FakeAsyncLLM:
    instances: ClassVar[list] = []

    def __init__(self, args):
        import asyncio
        import threading

        self.args, self.requests, self.shut = args, [], False
        self.loop = asyncio.get_running_loop()  # AsyncLLM starts its output handler on the running loop
        self.thread = threading.current_thread()
        _FakeAsyncLLM.instances.append(self)

    @classmethod
    def from_engine_args(cls, engine_args):
        return cls(engine_args)

    async def generate(self, prompt, params, request_id):
        import asyncio
        import types

        assert asyncio.get_running_loop() is self.loop  # every request on the engine's own loop
        self.requests.append((prompt, params, request_id))
        yield types.SimpleNamespace(outputs=[types.SimpleNamespace(text='{"errors": []}', finish_reason="stop")])

    def shutdown(self):
        self.shut = True


def _fake_vllm(monkeypatch):
    import sys
    import types

    root = types.ModuleType("vllm")
    root.SamplingParams = lambda **kw: kw
    root.LLM = lambda **kw: types.SimpleNamespace(kwargs=kw)
    modules = {"vllm": root}
    for name, attrs in {"vllm.engine": {}, "vllm.engine.arg_utils": {"AsyncEngineArgs": lambda **kw: kw},
                        "vllm.v1": {}, "vllm.v1.engine": {}, "vllm.v1.engine.async_llm": {"AsyncLLM": _FakeAsyncLLM},
                        "vllm.sampling_params": {"StructuredOutputsParams": lambda json: {"json": json}}}.items():
        module = types.ModuleType(name)
        for key, value in attrs.items():
            setattr(module, key, value)
        modules[name] = module
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_async_engine_is_built_and_served_on_its_own_loop_with_varying_seeds(models_cfg, monkeypatch):
    import threading

    from PIL import Image

    from pipeline.critic.backends.vllm import VLLMBackend
    from pipeline.models import model_dir
    from pipeline.rollout.vllm import vllm_model_dir

    _fake_vllm(monkeypatch)
    _FakeAsyncLLM.instances.clear()
    backend = VLLMBackend(RewardConfig(backend="vllm", vllm={"engine": "async"}), models_cfg.reward)
    try:
        [engine] = _FakeAsyncLLM.instances
        # Built inside the backend's loop thread, not the caller's (which has no running loop).
        assert engine.loop is backend.loop and engine.thread is backend.thread
        assert engine.thread is not threading.current_thread()
        # The model directory vLLM gets is the rollout's view (stock processor class), no video profiled.
        assert engine.args["model"] == str(vllm_model_dir(model_dir(models_cfg.reward)))
        assert engine.args["limit_mm_per_prompt"] == {"image": 2, "video": 0}

        pair = (Image.new("RGB", (32, 32), "white"), Image.new("RGB", (32, 32), "black"))
        first = backend._generate("table", [pair, pair], attempt=1)
        retry = backend._generate("table", [pair, pair], attempt=2)
        assert len(first) == len(retry) == 2
        params = [p for _prompt, p, _id in engine.requests]
        seeds = [p["seed"] for p in params]
        assert len(set(seeds)) == 4  # every request its own seed: a retry is a new draw
        assert params[0]["temperature"] == 0.0  # tables answer greedily ...
        assert params[2]["temperature"] > 0  # ... and a retry samples (greedy would repeat the invalid answer)
        assert all("structured_outputs" in p for p in params)
    finally:
        backend.close()
    assert engine.shut and not backend.thread.is_alive()
