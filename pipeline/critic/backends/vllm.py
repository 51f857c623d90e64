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

from pipeline.critic.backends.base import BackendUnavailable, RawAnswer, RewardBackend, TextRequest
from pipeline.critic.config import RewardConfig
from pipeline.critic.prompts import messages
from pipeline.models import load_processor, model_dir
from pipeline.models.config import ModelConfig
from pipeline.rollout.vllm import vllm_model_dir
from pipeline.sample import CATEGORIES


def vllm_available() -> tuple[bool, str]:
    try:
        import vllm  # noqa: F401
    except Exception as e:  # ImportError, or a broken CUDA install
        return False, f"vLLM is not importable here ({type(e).__name__}: {e}); it is a GPU-only optional extra"
    return True, ""


def structured_outputs_kwargs(schema: dict) -> dict[str, Any]:
    """SamplingParams keyword for a JSON-Schema constraint (vLLM ≥ 0.12; the `gpu` extra pins 0.31)."""
    # heavy: vLLM: the GPU extra, only this path needs it
    from vllm.sampling_params import StructuredOutputsParams

    return {"structured_outputs": StructuredOutputsParams(json=schema)}


# A retry of a greedy task (tables answer at temperature 0) samples instead, at the paper's RM sampling for
# charts/SVG: greedy decoding would repeat the invalid answer it is retrying.
RETRY_SAMPLING = {"temperature": 0.7, "top_p": 0.8, "top_k": 20}
ENGINE_START_TIMEOUT_S = 3600.0  # an 8B engine loads and captures CUDA graphs in minutes


class VLLMBackend(RewardBackend):
    name = "vllm"

    def __init__(self, cfg: RewardConfig, model_cfg: ModelConfig):
        ok, why = vllm_available()
        if not ok:
            raise BackendUnavailable(why)
        super().__init__(cfg)
        import vllm  # heavy: vLLM: the GPU extra, only this path needs it

        # The rollout's model directory view: our tiny models name a processor class vLLM cannot resolve.
        path = vllm_model_dir(model_dir(model_cfg))
        # Only for the chat template: prompt text with image placeholders (and the judge's text-only chats).
        processor = self.processor = load_processor(path)
        self.prompts = {t: processor.apply_chat_template(messages(t, cfg), add_generation_prompt=True,
                                                         tokenize=False) for t in CATEGORIES}
        v = cfg.vllm
        engine_kwargs = dict(
            model=str(path), tensor_parallel_size=v.tensor_parallel_size,
            gpu_memory_utilization=v.gpu_memory_utilization, max_model_len=v.max_model_len,
            max_num_seqs=v.max_num_seqs, dtype=model_cfg.dtype, seed=v.seed, enforce_eager=v.enforce_eager,
            # Reference and rendering; no video memory profiled.
            limit_mm_per_prompt={"image": 2, "video": 0},
        )
        self._vllm = vllm
        # One seed per request, never repeated: a retry (attempt > 1) draws a different answer.
        self._seeds = itertools.count(v.seed * 1_000_000)
        if v.engine == "llm":
            self.llm = vllm.LLM(**engine_kwargs)
            self.engine = None
        else:
            # heavy: vLLM: the GPU extra, only this path needs it
            from vllm.engine.arg_utils import AsyncEngineArgs
            # heavy: vLLM: the GPU extra, only this path needs it
            from vllm.v1.engine.async_llm import AsyncLLM

            self.llm = None
            self.loop = asyncio.new_event_loop()
            self.thread = threading.Thread(target=self.loop.run_forever, name="vllm-reward-loop", daemon=True)
            self.thread.start()

            async def build():
                # Built on the loop that will run every request, so the engine's output handler and queues
                # belong to that loop (AsyncLLM starts its handler on the running loop at construction).
                return AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_kwargs))

            try:
                self.engine = asyncio.run_coroutine_threadsafe(build(), self.loop).result(ENGINE_START_TIMEOUT_S)
            except BaseException:
                self._stop_loop()
                raise

    def _sampling_params(self, task: str, attempt: int = 1):
        s = self.cfg.sampling(task)
        sampling = {"temperature": s.temperature, "top_p": s.top_p if s.temperature > 0 else 1.0,
                    "top_k": s.top_k if (s.top_k and s.temperature > 0) else 0}
        if attempt > 1 and s.temperature == 0:
            sampling = dict(RETRY_SAMPLING)
        return self._vllm.SamplingParams(
            **sampling, presence_penalty=s.presence_penalty, repetition_penalty=s.repetition_penalty,
            max_tokens=s.max_new_tokens, seed=next(self._seeds), **structured_outputs_kwargs(self.schemas[task]),
        )

    def _text_params(self, request: TextRequest):
        return self._vllm.SamplingParams(temperature=0.0, max_tokens=request.max_new_tokens, seed=next(self._seeds),
                                         **structured_outputs_kwargs(request.schema))

    def _generate_text(self, requests: list[TextRequest]) -> list[RawAnswer]:
        inputs = [{"prompt": self.processor.apply_chat_template(
            [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]}
             if isinstance(m.get("content"), str) else m for m in r.messages],
            add_generation_prompt=True, tokenize=False)} for r in requests]
        params = [self._text_params(r) for r in requests]
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
        params = [self._sampling_params(task, attempt) for _ in inputs]
        if self.llm is not None:
            outs = self.llm.generate(inputs, params, use_tqdm=False)
            return [RawAnswer(o.outputs[0].text, o.outputs[0].finish_reason) for o in outs]
        fut = asyncio.run_coroutine_threadsafe(self._agenerate(inputs, params), self.loop)
        return fut.result()

    async def _agenerate(self, inputs, params):
        async def one(prompt, p):
            final = None
            async for out in self.engine.generate(prompt, p, f"rm-{uuid.uuid4().hex}"):
                final = out
            o = final.outputs[0]
            return RawAnswer(o.text, o.finish_reason)

        return list(await asyncio.gather(*(one(i, p) for i, p in zip(inputs, params))))

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
            self._stop_loop()
