"""Reward model in-process on GPU through vLLM (`LLM` for offline batches, or `AsyncLLM`), images passed as
`multi_modal_data`, answers constrained by vLLM's structured outputs (xgrammar) with the same JSON Schema as
the HF path. Tensor parallelism, memory share and context length come from `reward.vllm`.

vLLM is a GPU-only optional extra: on machines without it, constructing this backend raises
`BackendUnavailable` with the reason (its tests skip with that reason).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from typing import Any

from pipeline.config import ModelConfig
from pipeline.models import load_processor, resolve_model_path
from pipeline.critic.backends.base import BackendUnavailable, RawAnswer, RewardBackend, TextRequest
from pipeline.critic.config import RewardConfig
from pipeline.critic.prompts import messages
from pipeline.critic.schema import CATEGORIES


def vllm_available() -> tuple[bool, str]:
    try:
        import vllm  # noqa: F401
    except Exception as e:  # ImportError, or a broken CUDA install
        return False, f"vLLM is not importable here ({type(e).__name__}: {e}); it is a GPU-only optional extra"
    return True, ""


def structured_outputs_kwargs(schema: dict) -> dict[str, Any]:
    """SamplingParams keyword for a JSON-Schema constraint, across vLLM versions (≥0.12: structured_outputs;
    earlier: guided_decoding)."""
    try:
        from vllm.sampling_params import StructuredOutputsParams

        return {"structured_outputs": StructuredOutputsParams(json=schema)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}


class VLLMBackend(RewardBackend):
    name = "vllm"

    def __init__(self, cfg: RewardConfig, model_cfg: ModelConfig, cache_dir: str):
        ok, why = vllm_available()
        if not ok:
            raise BackendUnavailable(why)
        super().__init__(cfg)
        import vllm

        path = resolve_model_path(model_cfg, cache_dir)
        # Only for the chat template: prompt text with image placeholders (and the judge's text-only chats).
        processor = self.processor = load_processor(path)
        self.prompts = {t: processor.apply_chat_template(messages(t, cfg), add_generation_prompt=True,
                                                         tokenize=False) for t in CATEGORIES}
        v = cfg.vllm
        engine_kwargs = dict(
            model=str(path), tensor_parallel_size=v.tensor_parallel_size,
            gpu_memory_utilization=v.gpu_memory_utilization, max_model_len=v.max_model_len,
            max_num_seqs=v.max_num_seqs, dtype=model_cfg.dtype, seed=v.seed, enforce_eager=v.enforce_eager,
            limit_mm_per_prompt={"image": 2},
        )
        self.params = {t: self._sampling_params(vllm, t) for t in CATEGORIES}
        self._ids = itertools.count()
        if v.engine == "llm":
            self.llm = vllm.LLM(**engine_kwargs)
            self.engine = None
        else:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM

            self.llm = None
            self.loop = asyncio.new_event_loop()
            self.thread = threading.Thread(target=self.loop.run_forever, name="vllm-reward-loop", daemon=True)
            self.thread.start()
            self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_kwargs))

    def _sampling_params(self, vllm, task):
        s = self.cfg.sampling(task)
        return vllm.SamplingParams(
            temperature=s.temperature, top_p=s.top_p if s.temperature > 0 else 1.0,
            top_k=s.top_k if (s.top_k and s.temperature > 0) else -1, presence_penalty=s.presence_penalty,
            repetition_penalty=s.repetition_penalty,
            max_tokens=s.max_new_tokens, seed=None, **structured_outputs_kwargs(self.schemas[task]),
        )

    def _text_params(self, vllm, request: TextRequest):
        return vllm.SamplingParams(temperature=0.0, max_tokens=request.max_new_tokens, seed=None,
                                   **structured_outputs_kwargs(request.schema))

    def _generate_text(self, requests: list[TextRequest]) -> list[RawAnswer]:
        import vllm

        inputs = [{"prompt": self.processor.apply_chat_template(
            [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]}
             if isinstance(m.get("content"), str) else m for m in r.messages],
            add_generation_prompt=True, tokenize=False)} for r in requests]
        params = [self._text_params(vllm, r) for r in requests]
        if self.llm is not None:
            outs = self.llm.generate(inputs, params, use_tqdm=False)
            return [RawAnswer(o.outputs[0].text, o.outputs[0].finish_reason) for o in outs]

        async def all_answers():
            async def one(prompt, p):
                final = None
                async for out in self.engine.generate(prompt, p, f"judge-{uuid.uuid4().hex}"):
                    final = out
                return RawAnswer(final.outputs[0].text, final.outputs[0].finish_reason)

            return list(await asyncio.gather(*(one(i, p) for i, p in zip(inputs, params))))

        return asyncio.run_coroutine_threadsafe(all_answers(), self.loop).result()

    def _inputs(self, task, pairs):
        return [{"prompt": self.prompts[task], "multi_modal_data": {"image": [ref, pred]}} for ref, pred in pairs]

    def _generate(self, task, pairs, attempt):
        inputs = self._inputs(task, pairs)
        if self.llm is not None:
            outs = self.llm.generate(inputs, self.params[task], use_tqdm=False)
            return [RawAnswer(o.outputs[0].text, o.outputs[0].finish_reason) for o in outs]
        fut = asyncio.run_coroutine_threadsafe(self._agenerate(task, inputs), self.loop)
        return fut.result()

    async def _agenerate(self, task, inputs):
        async def one(prompt):
            final = None
            async for out in self.engine.generate(prompt, self.params[task], f"rm-{uuid.uuid4().hex}"):
                final = out
            o = final.outputs[0]
            return RawAnswer(o.text, o.finish_reason)

        return list(await asyncio.gather(*(one(p) for p in inputs)))

    def close(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.loop.call_soon_threadsafe(self.loop.stop)
