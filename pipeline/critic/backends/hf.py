"""Reward model through transformers' batched `generate`, with xgrammar enforcing the task's JSON Schema.

Works on CPU (tests, the embedded default: a tiny random Qwen3-VL still answers schema-valid JSON) and on a
GPU with a real Visual-ERM checkpoint. Sampling per task comes from config; HF has no presence penalty, so a
small logits processor provides vLLM's (subtract the penalty from every token already generated).
"""

from __future__ import annotations

import json
import logging

import torch
import transformers
import xgrammar as xgr
from xgrammar.contrib.hf import LogitsProcessor as GrammarLogitsProcessor

from pipeline.critic.backends.base import RawAnswer, RewardBackend, TextRequest
from pipeline.critic.config import RewardConfig
from pipeline.critic.prompts import messages
from pipeline.critic.schema import schema_json
from pipeline.models import load_model_and_processor
from pipeline.models.config import ModelConfig
from pipeline.sample import CATEGORIES

log = logging.getLogger(__name__)


class PresencePenalty(transformers.LogitsProcessor):
    """vLLM's presence penalty: logits of tokens already present in the generated text are lowered by
    `penalty` (once, however often they occur)."""

    def __init__(self, prompt_len: int, penalty: float):
        self.prompt_len = prompt_len
        self.penalty = penalty

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_len:]
        if generated.shape[1] == 0 or self.penalty == 0:
            return scores
        present = torch.zeros_like(scores, dtype=torch.bool)
        present.scatter_(1, generated.clamp(max=scores.shape[1] - 1), True)
        return scores - self.penalty * present.to(scores.dtype)


def _eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]


class HFBackend(RewardBackend):
    name = "hf"

    def __init__(self, cfg: RewardConfig, model_cfg: ModelConfig):
        super().__init__(cfg)
        hf = cfg.hf
        if hf.num_threads:
            torch.set_num_threads(hf.num_threads)
        self.device = torch.device(hf.device)
        self.model, self.processor = load_model_and_processor(model_cfg)
        self.model.to(self.device).eval()
        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"  # every prompt of a batch ends where generation starts
        self.eos_ids = _eos_ids(self.model, tokenizer)
        # The mask must be as wide as the model's logits (the lm_head may be padded past the tokenizer).
        vocab_size = self.model.config.get_text_config().vocab_size
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=self.eos_ids)
        compiler = self.compiler = xgr.GrammarCompiler(info)
        self.text_grammars: dict[str, xgr.CompiledGrammar] = {}  # by schema JSON (a judge uses one schema)
        # The constraint follows each task's configured answer format (the parser in base.py uses the same).
        self.grammars = {
            task: compiler.compile_json_schema(schema_json(task, cfg.limits, self.formats[task]),
                                               any_whitespace=False, separators=(",", ":"))
            for task in CATEGORIES
        }
        self.prompts = {task: self.processor.apply_chat_template(messages(task, cfg), add_generation_prompt=True,
                                                                 tokenize=False)
                        for task in CATEGORIES}
        self._seed = hf.seed

    @torch.no_grad()
    def _generate(self, task, pairs, attempt):
        answers: list[RawAnswer] = []
        bs = self.cfg.hf.max_batch_size
        for start in range(0, len(pairs), bs):
            answers.extend(self._generate_batch(task, pairs[start : start + bs]))
        return answers

    def _generate_batch(self, task, pairs):
        s = self.cfg.sampling(task)
        images = [im for pair in pairs for im in pair]  # reference, rendering, reference, rendering, ...
        inputs = self.processor(text=[self.prompts[task]] * len(pairs), images=images, return_tensors="pt",
                                padding=True, return_mm_token_type_ids=True).to(self.device)
        prompt_len = inputs["input_ids"].shape[1]
        processors = transformers.LogitsProcessorList()
        if s.presence_penalty:
            processors.append(PresencePenalty(prompt_len, s.presence_penalty))
        # Applied before temperature/top-k/top-p (transformers appends its warpers after custom processors),
        # so truncation only ever chooses among grammar-allowed tokens. One instance per generate() call.
        processors.append(GrammarLogitsProcessor(self.grammars[task]))
        if s.temperature > 0:
            sampling = dict(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
        else:
            sampling = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        if s.repetition_penalty != 1.0:  # transformers' is vLLM's (both follow CTRL: ÷/× by the penalty)
            sampling["repetition_penalty"] = s.repetition_penalty
        torch.manual_seed(self._seed)
        self._seed += 1
        out = self.model.generate(**inputs, max_new_tokens=s.max_new_tokens, logits_processor=processors,
                                  eos_token_id=self.eos_ids, **sampling)
        new = out[:, prompt_len:].tolist()
        answers = []
        for ids in new:
            stop = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
            finish = "stop" if stop is not None else "length"
            text = self.processor.tokenizer.decode(ids if stop is None else ids[:stop], skip_special_tokens=True)
            answers.append(RawAnswer(text, finish))
        return answers

    # -- text-only chats (the critic evaluation's LLM judge) ---------------------------------------------
    def _text_grammar(self, schema: dict) -> "xgr.CompiledGrammar":
        key = json.dumps(schema, sort_keys=True)
        if key not in self.text_grammars:
            self.text_grammars[key] = self.compiler.compile_json_schema(key, any_whitespace=False,
                                                                        separators=(",", ":"))
        return self.text_grammars[key]

    @staticmethod
    def _structured(messages: list[dict]) -> list[dict]:
        """Plain-string turns → the processor's content lists (its chat template expects them)."""
        return [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]}
                if isinstance(m.get("content"), str) else m for m in messages]

    @torch.no_grad()
    def _generate_text(self, requests: list[TextRequest]) -> list[RawAnswer]:
        answers: list[RawAnswer] = []
        bs = self.cfg.hf.max_batch_size
        # One generate() per run of requests sharing a schema and budget (a grammar serves one schema).
        start = 0
        while start < len(requests):
            first = requests[start]
            end = start + 1
            while (end < len(requests) and end - start < bs and requests[end].schema == first.schema
                   and requests[end].max_new_tokens == first.max_new_tokens):
                end += 1
            answers.extend(self._generate_text_batch(requests[start:end]))
            start = end
        return answers

    def _generate_text_batch(self, requests: list[TextRequest]) -> list[RawAnswer]:
        template = self.processor.apply_chat_template
        prompts = [template(self._structured(r.messages), add_generation_prompt=True, tokenize=False)
                   for r in requests]
        inputs = self.processor(text=prompts, return_tensors="pt", padding=True,
                                return_mm_token_type_ids=True).to(self.device)
        prompt_len = inputs["input_ids"].shape[1]
        grammar = GrammarLogitsProcessor(self._text_grammar(requests[0].schema))
        out = self.model.generate(**inputs, max_new_tokens=requests[0].max_new_tokens,
                                  logits_processor=transformers.LogitsProcessorList([grammar]),
                                  eos_token_id=self.eos_ids, do_sample=False, temperature=None, top_p=None,
                                  top_k=None)
        answers = []
        decode = self.processor.tokenizer.decode
        for ids in out[:, prompt_len:].tolist():
            stop = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
            text = decode(ids if stop is None else ids[:stop], skip_special_tokens=True)
            answers.append(RawAnswer(text, "stop" if stop is not None else "length"))
        return answers
