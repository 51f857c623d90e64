"""Supervised warm start of a tiny policy: a short SFT on compact synthetic (reference image, code) pairs.

A random tiny policy never writes code that renders, so every sample of a GRPO group gets the same failure
reward, every advantage is 0 and RL has nothing to learn from. RL-for-code pipelines start from a policy that
already answers in the right format some of the time; here that is a few hundred teacher-forced steps on
*compact* programs (a small bar/line chart, a 2×3 Markdown table, an SVG with 1–3 shapes) that fit in a tiny
rollout's token budget. Sampling at temperature 1 the warm-started policy then renders some of the time and
fails the rest — rewards differ within groups, and RL has a signal.

It runs once, offline, while the tiny model is built (`models.<role>.tiny.warm_start`), and is cached with it.
The prompts, chat template, processor and image path are exactly the rollout's (`Task.verl_prompt()` through
the dataloader's `structured_messages`, `apply_chat_template(add_generation_prompt=True)`, the processor).
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from pipeline.data.compact import COMPACT_KINDS, RENDER_SIZE, compact_program
from pipeline.data.edits import EditNotApplicable, propose_edit
from pipeline.data.loader import policy_messages
from pipeline.models.config import TinyWarmStartConfig
from pipeline.models.processor import collate
from pipeline.render import make_renderer
from pipeline.render.table import html_body
from pipeline.revision import revision_turn
from pipeline.sample import Sample
from pipeline.tasks import fenced_response

log = logging.getLogger(__name__)

@dataclass
class WarmStartExample:
    kind: str
    code: str
    image: np.ndarray  # H×W×3 uint8, the rendered reference
    # A revision example (`revision_examples`): the revision turn's prompt and its images (reference, broken
    # rendering); the answer is still `code`. None: a first-answer example, prompted by `policy_messages`.
    messages: list[dict] | None = None
    images: tuple[np.ndarray, ...] = ()


def render_examples(per_kind: int, seed: int, split: str, progress: bool = True) -> list[WarmStartExample]:
    """`per_kind` compact programs of each kind with their rendered reference images, interleaved by kind.

    A program that does not render is counted and skipped (the generators are written to always render, so
    failures mean a broken renderer: more than a few raise instead of training on a skewed set)."""

    examples: list[WarmStartExample] = []
    failures: dict[str, int] = {}
    by_kind: dict[str, list[WarmStartExample]] = {}
    bar = tqdm(total=per_kind * len(COMPACT_KINDS), desc="warm start: render", unit="img", disable=not progress)
    for kind in COMPACT_KINDS:
        renderer = make_renderer(kind)  # owned here and closed: no zygote or browser outlives the build
        try:
            for i in range(per_kind):
                code = compact_program(kind, i, seed=seed, split=split)
                result = renderer.render(code, size=RENDER_SIZE[kind])
                bar.update(1)
                if not result.ok:
                    reason = getattr(result.failure, "value", str(result.failure))
                    failures[f"{kind}:{reason}"] = failures.get(f"{kind}:{reason}", 0) + 1
                    continue
                by_kind.setdefault(kind, []).append(WarmStartExample(kind, code, np.asarray(result.image)))
        finally:
            renderer.close()
    bar.close()
    n_failed = sum(failures.values())
    if n_failed:
        log.warning("warm start: %d of %d compact programs did not render: %s", n_failed,
                    per_kind * len(COMPACT_KINDS), failures)
    if n_failed > max(2, per_kind * len(COMPACT_KINDS) // 10):
        raise RuntimeError(f"warm start: {n_failed} compact programs failed to render ({failures}); "
                           "is the sandboxed renderer working on this machine?")
    for group in itertools.zip_longest(*(by_kind.get(k, []) for k in COMPACT_KINDS)):
        examples.extend(e for e in group if e is not None)
    return examples


def revision_examples(examples: list[WarmStartExample], per_kind: int, seed: int) -> tuple[list[WarmStartExample], dict]:
    """Revision turns for free: a targeted edit (pipeline/data/edits) of a compact program gives broken code
    with exact discrepancy labels; the turn is built by `pipeline.revision.revision_turn`, exactly as the
    critic's feedback would be shown, and its answer is the original program. Returns the examples and
    counts per kind (made / no edit applies / the edit did not render or changed nothing)."""

    out: list[WarmStartExample] = []
    counts: dict[str, dict[str, int]] = {}
    for kind in COMPACT_KINDS:
        c = counts[kind] = {"made": 0, "no_edit": 0, "unusable": 0}
        renderer = make_renderer(kind)
        try:
            for i, example in enumerate(e for e in examples if e.kind == kind):
                if c["made"] >= per_kind:
                    break
                # Table edits work on the HTML DOM: a compact Markdown table is edited as the HTML it renders as.
                source = html_body(example.code) if kind == "table" else example.code
                try:
                    broken, label = propose_edit(kind, source, random.Random(f"{seed}/revision/{kind}/{i}"))
                except EditNotApplicable:
                    c["no_edit"] += 1
                    continue
                result = renderer.render(broken, size=RENDER_SIZE[kind])
                if not result.ok or np.array_equal(result.image, example.image):
                    c["unusable"] += 1
                    continue
                previous = Sample(task=kind, reference_image=example.image, prompt_id=f"warm-start/{kind}/{i}",
                                  messages=policy_messages(kind), code=broken,
                                  rendered_image=np.asarray(result.image),
                                  discrepancies=[{k: v for k, v in label.to_dict().items() if k != "edit"}],
                                  extra={"judgement": {"valid": True, "reason": None}})
                turn = revision_turn(previous)
                out.append(WarmStartExample(kind, example.code, example.image, messages=turn.messages,
                                            images=tuple(turn.prompt_images)))
                c["made"] += 1
        finally:
            renderer.close()
    return out, counts


def encode_example(processor, example: WarmStartExample) -> dict[str, torch.Tensor]:
    """Prompt (as generation starts) + fenced answer + <|im_end|>; labels cover the answer tokens only."""
    messages = example.messages if example.messages is not None else policy_messages(example.kind)
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    answer = fenced_response(example.kind, example.code) + processor.tokenizer.eos_token
    images = [Image.fromarray(np.asarray(im).astype(np.uint8)) for im in (example.images or (example.image,))]
    prompt_inputs = processor(text=[prompt], images=images, return_tensors="pt", return_mm_token_type_ids=True)
    full = processor(text=[prompt + answer], images=images, return_tensors="pt", return_mm_token_type_ids=True)
    n_prompt = prompt_inputs["input_ids"].shape[1]
    input_ids = full["input_ids"][0]
    if not torch.equal(input_ids[:n_prompt], prompt_inputs["input_ids"][0]):
        raise RuntimeError("warm start: the answer changed the prompt's tokenization; labels would be misplaced")
    labels = input_ids.clone()
    labels[:n_prompt] = -100
    return {"input_ids": input_ids, "labels": labels, "mm_token_type_ids": full["mm_token_type_ids"][0],
            "pixel_values": full["pixel_values"], "image_grid_thw": full["image_grid_thw"]}


def warm_start(model: torch.nn.Module, processor, cfg: TinyWarmStartConfig, seed: int,
               progress: bool = True) -> dict[str, float]:
    """Teacher-forced cross-entropy on the answer tokens (AdamW), in place. Deterministic for one config:
    seeded, and on one thread (float reductions may differ with the thread count). Returns a small summary."""
    start = time.perf_counter()
    examples = render_examples(cfg.examples_per_task, seed=seed, split="train", progress=progress)
    revisions: dict = {}
    if cfg.revision_examples_per_task:
        extra, revisions = revision_examples(examples, cfg.revision_examples_per_task, seed)
        log.info("warm start: %d revision examples (per kind: %s)", len(extra), revisions)
        examples = examples + extra
    encoded = [encode_example(processor, e) for e in examples]
    pad_id = processor.tokenizer.pad_token_id
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        order = random.Random(f"{seed}/warm-start-order")
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then linear decay to 10 %
            optimizer, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) * (1.0 - 0.9 * s / cfg.steps))
        model.train()
        losses: list[float] = []
        bar = tqdm(range(cfg.steps), desc="warm start: SFT", unit="step", disable=not progress)
        batch_size = min(cfg.batch_size, len(encoded))
        for _ in bar:
            batch = collate([encoded[i] for i in order.sample(range(len(encoded)), batch_size)], pad_id)
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)  # drawn at the next tick: mininterval holds
        model.eval()
    finally:
        torch.set_num_threads(threads)
    tail = losses[-max(1, len(losses) // 10):]
    summary = {"examples": float(len(examples)), "revision_examples": revisions, "steps": float(cfg.steps),
               "first_loss": losses[0],
               "final_loss": sum(tail) / len(tail), "seconds": round(time.perf_counter() - start, 1)}
    log.info("warm start: %d steps on %d compact examples, loss %.3f → %.3f in %.0f s", cfg.steps,
             len(examples), summary["first_loss"], summary["final_loss"], summary["seconds"])
    return summary
