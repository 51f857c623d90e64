"""Rollout with transformers' `generate` — the CPU backend, also usable on one GPU."""

from __future__ import annotations

import torch

from pipeline.models import load_model_and_processor
from pipeline.models.config import ModelsConfig
from pipeline.rollout.base import (
    expand_groups,
    fill_response,
    is_sampling,
    logprob_temperature,
    never_sampled_token_ids,
    prompt_images,
    prompt_text,
    stop_token_ids,
)
from pipeline.rollout.config import SamplingConfig
from pipeline.sample import Sample


class HFRollout:
    def __init__(self, models: ModelsConfig, sampling: SamplingConfig, device: str = "cpu", seed: int = 0):
        self.sampling = sampling
        self.device = torch.device(device)
        self.model, self.processor = load_model_and_processor(models.policy)
        self.model.to(self.device).eval()
        # Left padding: every prompt in a batch must end where generation starts.
        self.processor.tokenizer.padding_side = "left"
        self.stop_ids = stop_token_ids(self.model.generation_config, self.processor.tokenizer)
        self.never_sampled = never_sampled_token_ids(self.model.generation_config, self.model.config)
        self.version = 0
        self.generator_seed = seed

    def load_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> None:
        """Replace the policy's weights (a full state dict from the trainer) and adopt its version."""
        missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        if unexpected or [k for k in missing if not k.endswith("rotary_emb.inv_freq")]:
            raise ValueError(f"weight sync mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
        self.version = version

    @torch.no_grad()
    def generate(self, prompts: list[Sample], n: int | None = None, greedy: bool = False) -> list[Sample]:
        """Return n new Samples per prompt (same prompt_id = one GRPO group), responses filled in.
        `greedy` decodes deterministically (evaluation) whatever the configured sampling."""
        n = n or self.sampling.n
        expanded = expand_groups(prompts, n)
        if not expanded:
            return []
        inputs = self.processor(
            text=[prompt_text(self.processor, s) for s in expanded],
            images=[image for s in expanded for image in prompt_images(s)],  # consumed in placeholder order
            return_tensors="pt",
            padding=True,
            return_mm_token_type_ids=True,
        ).to(self.device)
        torch.manual_seed(self.generator_seed)
        self.generator_seed += 1
        s = self.sampling
        if is_sampling(s, greedy):
            sampling = {"do_sample": True, "temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k}
        else:
            sampling = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        # `suppress_tokens` hard-blocks the never-sampled tokens (-inf logits: vision tokens, the generation
        # config's own); `output_logits` returns the raw logits, before that suppression and before top-p/k,
        # which is what the log-probs are taken from (what the trainer recomputes).
        out = self.model.generate(
            **inputs, max_new_tokens=s.max_new_tokens, output_logits=True, return_dict_in_generate=True,
            suppress_tokens=self.never_sampled or None, **sampling
        )
        prompt_len = inputs["input_ids"].shape[1]
        new_tokens = out.sequences[:, prompt_len:]
        logits = torch.stack(out.logits, dim=1).float() / logprob_temperature(s, greedy)
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        tokenizer = self.processor.tokenizer
        return [
            fill_response(
                sample,
                prompt_ids=inputs["input_ids"][i][inputs["attention_mask"][i].bool()].tolist(),
                response_ids=new_tokens[i].tolist(),
                response_logprobs=logprobs[i].tolist(),
                tokenizer=tokenizer,
                stop_ids=self.stop_ids,
                version=self.version,
                never_sampled=self.never_sampled,
            )
            for i, sample in enumerate(expanded)
        ]
