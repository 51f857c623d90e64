"""Run a critic over a benchmark (targeted-edit set or VC-RewardBench copy) and score it."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from pipeline.config import ConfigError
from pipeline.data.records import RecordFormatError
from pipeline.evaluate.config import CriticEvalConfig, JudgeConfig
from pipeline.evaluate.critic import (
    VERDICT_SCHEMA, ItemResult, LLMJudgeMatcher, Matcher, RecordError, SimilarityMatcher, parse_discrepancies,
    score_item, summarize,
)
from pipeline.evaluate.records import BadRecord, BenchItem, iter_bench_items


def import_target(target: str) -> Callable:
    module, _, name = target.partition(":")
    if not module or not name:
        raise ConfigError(f"target {target!r} must look like 'package.module:function'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot import {target!r}: {e}") from None


def parse_critic_answer(answer: Any) -> Any:
    """The critic's answer as a dict/list; text is searched for its outermost JSON object."""
    if isinstance(answer, (dict, list)) or answer is None:
        return answer
    text = str(answer)
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise RecordError("critic answer holds no JSON object")
    try:
        return json.loads(text[start : end + 1])
    except json.JSONDecodeError as e:
        raise RecordError(f"critic answer is not valid JSON: {e.msg}") from None


def make_matcher(config: CriticEvalConfig) -> Matcher:
    m = config.matcher
    if m.kind == "llm_judge":
        return LLMJudgeMatcher(backend_judge(m.judge), max_attempts=m.judge.max_attempts)
    return SimilarityMatcher(m.full_threshold, m.partial_threshold)


def _make_reward_backend(reward: dict, model_path: str | None, what: str):
    from pipeline.config import ModelConfig
    from pipeline.reward.backends import make_backend
    from pipeline.reward.config import RewardConfig

    try:
        reward_cfg = RewardConfig.model_validate(reward)
    except ValueError as e:
        raise ConfigError(f"{what} is not a valid reward config: {e}") from None
    return make_backend(reward_cfg, ModelConfig(path=model_path) if model_path else None)


def backend_judge(cfg: JudgeConfig):
    """The judge function of LLMJudgeMatcher, through the reward backend `cfg.reward` describes."""
    backend = _make_reward_backend(cfg.reward, cfg.model_path, "matcher.judge.reward")
    if not backend.supports_text:
        backend.close()
        raise ConfigError(f"matcher.judge: the {backend.name} reward backend cannot generate text; "
                          "use hf, vllm or openai")
    return text_judge(backend, cfg.max_new_tokens, cfg.batch_size)


def text_judge(backend, max_new_tokens: int = 48, batch_size: int = 64):
    """prompts → verdict answers through `backend.generate_text` under VERDICT_SCHEMA, in batches. A request
    the backend could not answer becomes None (a judge failure after retries), never an exception."""
    from pipeline.reward.backends import TextRequest

    def judge(prompts: list[str]) -> list[str | None]:
        answers = []
        for start in range(0, len(prompts), batch_size):
            requests = [TextRequest([{"role": "user", "content": p}], VERDICT_SCHEMA, max_new_tokens)
                        for p in prompts[start : start + batch_size]]
            answers.extend(a.text if a.error is None else None for a in backend.generate_text(requests))
        return answers

    judge.backend = backend  # so the caller can close it and read its stats
    return judge


def _predictions_file(path: str) -> dict[str, Any]:
    out = {}
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        if line.strip():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordFormatError(f"{path}:{i + 1}: not JSON: {e.msg}") from None
            out[str(rec.get("id"))] = rec.get("errors", rec.get("pred_json"))
    return out


def evaluate_critic(data: str | Path, config: CriticEvalConfig, progress: bool = True) -> dict:
    """Summary per task and overall, per-item results, and every item that could not be scored (and why)."""
    matcher = make_matcher(config)
    judge_backend = getattr(getattr(matcher, "judge", None), "backend", None)
    try:
        results, unscored, critic_failures = _score_all(data, config, matcher, progress)
    finally:
        if judge_backend is not None:
            judge_backend.close()
    return {
        "summary": summarize(results, config.counting),
        "matcher": config.matcher.kind,
        "critic_unusable_answers": critic_failures,
        "judge_failures": getattr(matcher, "judge_failures", 0),
        "judge": matcher.stats() if isinstance(matcher, LLMJudgeMatcher) else None,
        "unscored": unscored,
        "items": [r.to_dict() for r in results],
    }


def _score_all(data: str | Path, config: CriticEvalConfig, matcher: Matcher, progress: bool
               ) -> tuple[list[ItemResult], list[dict], int]:
    predict = make_predictor(config)
    results: list[ItemResult] = []
    unscored: list[dict] = []
    critic_failures = 0
    bar = tqdm(desc="critic eval", disable=not progress, unit="item")
    for chunk in _chunks(iter_bench_items(data), config.critic.batch_size):
        items = []
        for item in chunk:
            if isinstance(item, BadRecord):
                unscored.append({"position": item.position, "id": item.id, "reason": item.reason})
            else:
                items.append(item)
        for item, answer in zip(items, predict(items)):
            bar.update(1)
            if isinstance(answer, RecordFormatError):  # the item's images are broken: it cannot be judged
                unscored.append({"id": item.id, "reason": str(answer)})
                continue
            try:
                if isinstance(answer, Exception):
                    raise answer
                predicted = parse_discrepancies(parse_critic_answer(answer), item.task)
            except RecordError:
                # An unusable critic answer is scored as "found nothing" and counted, as a reward would be.
                critic_failures += 1
                predicted = []
            try:
                annotated = parse_discrepancies(item.annotated, item.task)
                results.append(score_item(item.id, item.task, predicted, annotated, matcher))
            except RecordError as e:  # the annotation itself is malformed
                unscored.append({"id": item.id, "reason": str(e)})
    bar.close()
    return results, unscored, critic_failures


def _chunks(iterable, size: int):
    chunk = []
    for x in iterable:
        chunk.append(x)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


Answer = Any  # the critic's raw answer, or the exception that stands for "no usable answer"


def make_predictor(config: CriticEvalConfig) -> Callable[[list[BenchItem]], list[Answer]]:
    """A function from a chunk of items to the critic's answers for them, one per item, never raising."""
    source = config.critic
    if source.kind == "oracle":
        return lambda items: [item.annotated for item in items]
    if source.kind == "empty":
        return lambda items: [[] for _ in items]
    if source.kind == "records":
        return lambda items: [item.embedded_prediction if item.embedded_prediction is not None
                              else RecordError(f"item {item.id} carries no pred_json") for item in items]
    if source.kind == "predictions":
        predictions = _predictions_file(source.path)
        return lambda items: [predictions[item.id] if item.id in predictions
                              else RecordError(f"no prediction for item {item.id}") for item in items]
    if source.kind == "callable":
        critic_fn = import_target(source.target)

        def call(items):
            out = []
            for item in items:
                try:
                    reference, candidate = item.images()
                except RecordFormatError as e:
                    out.append(e)
                    continue
                try:
                    out.append(critic_fn(item.task, reference, candidate))
                except Exception as e:  # a critic bug or outage is this item's failure, not the run's
                    out.append(RecordError(f"critic raised {type(e).__name__}: {e}"))
            return out

        return call
    return _reward_backend_predictor(config)


def _reward_backend_predictor(config: CriticEvalConfig) -> Callable[[list[BenchItem]], list[Answer]]:
    """The project's reward backend (HF / vLLM / OpenAI-compatible / fingerprint) as the critic, in batches."""
    from pipeline.reward.backends import JudgeRequest

    backend = _make_reward_backend(config.critic.reward, config.critic.model_path, "critic.reward")

    def call(items):
        out: list[Answer] = [None] * len(items)
        requests, where = [], []
        for i, item in enumerate(items):
            try:
                reference, candidate = item.images()
            except RecordFormatError as e:
                out[i] = e
                continue
            requests.append(JudgeRequest(item.task, reference, candidate, key=item.id))
            where.append(i)
        judgements = backend.score(requests) if requests else []
        for i, j in zip(where, judgements):
            out[i] = {"errors": j.errors} if j.valid else RecordError(f"critic answer invalid: {j.reason}")
        return out

    return call


def format_summary(summary: dict) -> str:
    """A Markdown table of the per-task and overall metrics."""
    lines = ["| task | items | F1 hard | F1 soft | severity r | predicted | annotated | full | partial |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['items']} | {s['f1_hard']:.3f} | {s['f1_soft']:.3f} | "
                     f"{s['severity_pearson']:.3f} | {s['n_predicted']} | {s['n_annotated']} | "
                     f"{s['full_matches']} | {s['partial_matches']} |")
    return "\n".join(lines)
