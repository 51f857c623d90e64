"""Look before you trust: does a model critic use its images? Teacher-forced answer likelihoods.

A critic that lists plausible errors without looking at the pair is worthless as a reward, however good its
F1 looks on a set whose errors are predictable from the task alone. Two probes read the model's likelihood
of a *given* answer (no generation) for a given (reference, rendering) pair:

  swap test   the mean per-token NLL of the pair's reference answer (its label, written in the served answer
              format) given the pair's own images vs given another pair's images of the same task (a seeded
              derangement, `derangement`). A critic that reads its images finds its own pair's answer clearly
              more likely (swapped NLL > true NLL); one that ignores them scores both the same.
  clean test  the per-token log-likelihood of the "nothing wrong" answer (the schema-valid answer with an empty
              error list, `AnswerScorer.nothing_wrong`) given the pair: a seeing critic finds it more likely
              for clean pairs than for edited ones (the AUROC of that score, `pipeline.metrics.critic.auroc`).

Everything goes through what the HF reward backend serves (`pipeline/critic/backends/hf.py`) and the critic
SFT trains on: the processor's chat template over `prompts.messages(task, cfg)` with the generation prompt,
the two images through `images.prepare_pair` under the task's layout and `cfg.max_image_side`, the answer text
(`schema.serialize_answer` in the task's served answer format) followed by the tokenizer's eos token. The
answer tokens are the ones that follow the prompt's own tokenization (checked, as the SFT encoder checks).

Forward passes are batched (`batch_size` pairs, right-padded as in SFT's `collate`), under
`torch.inference_mode`; the language-model head runs on the answer positions only. Pure logic: no Ray, no
loading (`AnswerScorer.from_backend` reuses a loaded HF backend's model, processor and settings).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.critic.config import RewardConfig
from pipeline.critic.images import prepare_pair
from pipeline.critic.prompts import layout, messages
from pipeline.critic.schema import serialize_answer
from pipeline.models.processor import collate

Pair = tuple[Any, Any]  # (reference, rendering): arrays, PIL images, encoded bytes or paths (images.to_array)


@dataclass(frozen=True)
class AnswerScore:
    """The teacher-forced likelihood of one answer (answer tokens + eos) given one pair."""

    logprob: float  # summed log-probability of the answer tokens (nats)
    tokens: int  # answer tokens scored (eos included)

    @property
    def nll(self) -> float:
        """Mean per-token negative log-likelihood (nats per token)."""
        return -self.logprob / self.tokens

    @property
    def mean_logprob(self) -> float:
        """Mean per-token log-likelihood (= −nll): the clean test's score."""
        return self.logprob / self.tokens


def derangement(n: int, seed: int) -> list[int] | None:
    """A seeded permutation p of range(n) with p[i] != i for every i (Sattolo's algorithm: a uniformly random
    single n-cycle, so always a derangement); the same (n, seed) gives the same p. None when n < 2 (no pair
    has another pair to borrow images from)."""
    if n < 2:
        return None
    p = list(range(n))
    rng = random.Random(seed)
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)  # j < i, never i itself: that is what makes it one cycle
        p[i], p[j] = p[j], p[i]
    return p


class AnswerScorer:
    """Teacher-forced answer likelihoods of a Qwen3-VL critic, under the reward settings `cfg` (prompt, layout,
    image size, answer format, limits; None = ours, as the tiny critic is trained)."""

    def __init__(self, model: torch.nn.Module, processor, cfg: RewardConfig | None = None, batch_size: int = 8,
                 threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.model = model
        self.processor = processor
        self.cfg = cfg if cfg is not None else RewardConfig()
        self.batch_size = max(1, batch_size)
        self.eos = processor.tokenizer.eos_token
        self._prompts: dict[str, str] = {}

    @classmethod
    def from_backend(cls, backend, batch_size: int | None = None) -> AnswerScorer:
        """The model, processor and settings of a loaded HF reward backend (`backends/hf.py`), reused."""
        return cls(backend.model, backend.processor, backend.cfg,
                   batch_size=batch_size or backend.cfg.hf.max_batch_size)

    # -- texts -----------------------------------------------------------------------------------------------
    def prompt(self, task: str) -> str:
        """The HF backend's prompt for `task`, character for character."""
        if task not in self._prompts:
            self._prompts[task] = self.processor.apply_chat_template(
                messages(task, self.cfg), add_generation_prompt=True, tokenize=False)
        return self._prompts[task]

    def answer(self, task: str, errors: list[dict[str, Any]]) -> str:
        """The answer text the critic is trained to emit for these errors, in the task's served format."""
        return serialize_answer(task, errors, self.cfg.limits, self.cfg.answer_format(task))

    def nothing_wrong(self, task: str) -> str:
        """The schema-valid "nothing wrong" answer (empty error list, counts 0) in the task's served format."""
        return self.answer(task, [])

    def answer_ids(self, task: str, answer: str) -> list[int]:
        """The answer + eos tokens as they follow the prompt. Raises ValueError when appending the answer
        changes the prompt's tokenization (the scored positions would be misplaced)."""
        tokenize = self.processor.tokenizer
        prompt = self.prompt(task)
        prompt_ids = tokenize(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenize(prompt + answer + self.eos, add_special_tokens=False)["input_ids"]
        if full_ids[:len(prompt_ids)] != prompt_ids:
            raise ValueError(f"{task} answer {answer[:60]!r}...: appending it changes the prompt's tokenization")
        return full_ids[len(prompt_ids):]

    # -- scoring ---------------------------------------------------------------------------------------------
    def _encode(self, task: str, pair: Pair, answer: str) -> dict[str, torch.Tensor]:
        ids = self.answer_ids(task, answer)
        images = list(prepare_pair(task, pair[0], pair[1], layout(task, self.cfg), self.cfg.max_image_side))
        full = self.processor(text=[self.prompt(task) + answer + self.eos], images=images, return_tensors="pt",
                              return_mm_token_type_ids=True)
        input_ids = full["input_ids"][0]
        n = len(ids)
        if input_ids[-n:].tolist() != ids:
            raise ValueError(f"{task}: the answer tokens differ once the images are expanded")
        labels = torch.full_like(input_ids, -100)
        labels[-n:] = input_ids[-n:]
        return {"input_ids": input_ids, "labels": labels, "mm_token_type_ids": full["mm_token_type_ids"][0],
                "pixel_values": full["pixel_values"], "image_grid_thw": full["image_grid_thw"]}

    @torch.inference_mode()
    def _forward(self, encoded: list[dict[str, torch.Tensor]]) -> list[AnswerScore]:
        pad_id = self.processor.tokenizer.pad_token_id
        batch = collate(encoded, pad_id if pad_id is not None else 0)
        device = next(self.model.parameters()).device
        labels = batch.pop("labels").to(device)
        inputs = {k: v.to(device) for k, v in batch.items()}
        hidden = self.model.model(**inputs, use_cache=False).last_hidden_state[:, :-1]
        target = labels[:, 1:]
        keep = target != -100
        logits = self.model.lm_head(hidden[keep]).float()
        token_nll = F.cross_entropy(logits, target[keep], reduction="none")
        rows = keep.nonzero()[:, 0]
        nll = torch.zeros(len(encoded), dtype=torch.float64, device=device).index_add_(0, rows, token_nll.double())
        counts = keep.sum(dim=1)
        return [AnswerScore(-float(s), int(c)) for s, c in zip(nll.tolist(), counts.tolist())]

    def score(self, task: str, pairs: Sequence[Pair], answers: Sequence[str]) -> list[AnswerScore]:
        """The likelihood of answers[i] given pairs[i] (all of task `task`), in batches of `batch_size`."""
        if len(pairs) != len(answers):
            raise ValueError(f"{len(pairs)} pairs but {len(answers)} answers")
        out: list[AnswerScore] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = range(start, min(start + self.batch_size, len(pairs)))
            out.extend(self._forward([self._encode(task, pairs[i], answers[i]) for i in chunk]))
        return out

    def swap_test(self, task: str, pairs: Sequence[Pair], answers: Sequence[str], seed: int = 0
                  ) -> tuple[list[AnswerScore], list[AnswerScore]] | None:
        """(true, swapped): answers[i] given pairs[i], and answers[i] given pairs[p[i]] for the seeded
        derangement p of the task's pairs. None when there are fewer than two pairs."""
        p = derangement(len(pairs), seed)
        if p is None:
            return None
        return self.score(task, pairs, answers), self.score(task, [pairs[j] for j in p], answers)

    def nothing_wrong_scores(self, task: str, pairs: Sequence[Pair]) -> list[float]:
        """Per pair, the mean per-token log-likelihood of the "nothing wrong" answer (higher: the critic finds
        "nothing wrong" more likely). One answer text per task, so within a task this ranks pairs exactly as
        the summed log-likelihood does; per token, tasks with longer empty answers are comparable when pooled."""
        empty = self.nothing_wrong(task)
        return [s.mean_logprob for s in self.score(task, pairs, [empty] * len(pairs))]


__all__ = ["AnswerScore", "AnswerScorer", "Pair", "derangement"]
