"""What a tiny model's byte-level BPE tokenizer is trained on: the programs the policy is asked to write
(synthetic and compact), and for a tiny critic also its instructions and answers, so that every text a tiny
model reads or writes is a few tokens per word, not one per byte."""

from __future__ import annotations

from typing import Iterable

from pipeline.critic.config import JudgementLimits
from pipeline.critic.prompts import prompt
from pipeline.critic.schema import serialize_answer
from pipeline.data.compact import compact_corpus
from pipeline.data.edits import EditNotApplicable, propose_edit
from pipeline.data.generators import generate_program, item_rng, synthesize_code
from pipeline.sample import TASK_KINDS

# Bump when the tiny-model recipe changes so stale caches are rebuilt, not reused.
# 3: compact programs join the tokenizer corpus; optional SFT warm start (tiny.warm_start).
TINY_RECIPE_VERSION = 3
CORPUS_PROGRAMS = 1500  # synthetic programs the tokenizer is trained on (~1 s)
# Compact programs (warm_start.py) in the tokenizer corpus: their boilerplate (`import matplotlib.pyplot as
# plt`, `|---|`, `<svg viewBox=`) becomes a few tokens, so whole answers fit a tiny rollout's token budget.
COMPACT_CORPUS_PROGRAMS = 300


def code_corpus(n: int = CORPUS_PROGRAMS, seed: int = 0) -> Iterable[str]:
    """The project's own synthetic chart / table / SVG programs: what the policy is asked to write."""
    for i in range(n):
        yield synthesize_code(TASK_KINDS[i % 3], i, seed=seed, split="tokenizer")


def tokenizer_corpus() -> Iterable[str]:
    

    yield from code_corpus()
    yield from compact_corpus(COMPACT_CORPUS_PROGRAMS)


CRITIC_CORPUS_LABELS = 600  # targeted-edit answers (no rendering needed) in a tiny critic's tokenizer corpus


def critic_corpus() -> Iterable[str]:
    """What a tiny critic reads and writes: the code corpus, its three instructions (so the ~800-token English
    prompt tokenizes to a few hundred word tokens, which is most of the cost of every training step) and
    answers written from targeted-edit labels, in the exact answer format."""

    yield from tokenizer_corpus()
    tasks = TASK_KINDS
    for _ in range(50):
        yield from (prompt(t) for t in tasks)
    limits = JudgementLimits()
    for i in range(CRITIC_CORPUS_LABELS):
        task = tasks[i % 3]
        rng = item_rng(0, f"tokenizer-labels/{task}", i)
        code, _ = generate_program(task, rng, "html" if task == "table" else "mixed")
        try:
            _, label = propose_edit(task, code, rng)
        except EditNotApplicable:
            continue
        yield serialize_answer(task, [label.to_dict()], limits)
