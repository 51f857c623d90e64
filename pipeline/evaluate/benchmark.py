"""Run a critic over a benchmark (targeted-edit set or VC-RewardBench copy) and score it."""

from __future__ import annotations

import importlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from tqdm import tqdm

from pipeline.critic.baselines import CriticUnusable, make_baseline
from pipeline.critic.config import RewardConfig
from pipeline.data.records import RecordFormatError
from pipeline.evaluate.config import CriticEvalConfig, JudgeConfig
from pipeline.evaluate.records import BadRecord, BenchItem, iter_bench_items
from pipeline.metrics.critic import (
    ALIGN_PROMPT,
    VERDICT_SCHEMA,
    ItemResult,
    LLMJudgeMatcher,
    Matcher,
    OfficialMatcher,
    RecordError,
    SimilarityMatcher,
    align_prompt,
    align_schema,
    deterministic_align,
    parse_discrepancies,
    score_item,
    score_item_official,
    summarize,
    summarize_official,
)
from pipeline.sample import JudgementLimits
from pipeline.schema import ConfigError


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


def make_matcher(config: CriticEvalConfig) -> Matcher | OfficialMatcher:
    m = config.matcher
    if m.kind == "official":
        if not m.judge.reward.get("backend"):  # the deterministic CPU fallback judge
            return OfficialMatcher(deterministic_align(m.full_threshold, m.partial_threshold))
        return OfficialMatcher(backend_align(m.judge))
    if m.kind == "llm_judge":
        return LLMJudgeMatcher(backend_judge(m.judge), max_attempts=m.judge.max_attempts)
    return SimilarityMatcher(m.full_threshold, m.partial_threshold)


def _make_reward_backend(reward: dict, model_path: str | None, what: str):
    from pipeline.critic.backends import make_backend  # heavy: pulls in torch, transformers
    from pipeline.models.config import ModelConfig  # heavy: pulls in torch, transformers

    try:
        reward_cfg = RewardConfig.model_validate(reward)
    except ValueError as e:
        raise ConfigError(f"{what} is not a valid reward config: {e}") from None
    if model_path is None and reward_cfg.backend in ("hf", "vllm"):  # the default critic: tiny, built here once
        from pipeline.models.config import ModelsConfig  # heavy: pulls in torch, transformers
        from pipeline.tiny import ensure_model  # heavy: pulls in tokenizers, torch, transformers

        model_path = str(ensure_model(ModelConfig(), ModelsConfig().cache_dir))
    return make_backend(reward_cfg, ModelConfig(path=model_path) if model_path else None)


def backend_judge(cfg: JudgeConfig):
    """The judge function of LLMJudgeMatcher, through the reward backend `cfg.reward` describes."""
    backend = _make_reward_backend(cfg.reward, cfg.model_path, "matcher.judge.reward")
    if not backend.supports_text:
        backend.close()
        raise ConfigError(f"matcher.judge: the {backend.name} reward backend cannot generate text; "
                          "use hf, vllm or openai")
    return text_judge(backend, cfg.max_new_tokens, cfg.batch_size)


def backend_align(cfg: JudgeConfig):
    """The official matcher's judge through a reward backend: one schema-constrained text chat per item."""
    from pipeline.critic.backends import TextRequest  # heavy: pulls in torch, transformers

    template = ALIGN_PROMPT
    if cfg.prompt_file:
        try:
            template = Path(cfg.prompt_file).expanduser().read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"matcher.judge.prompt_file: {e}") from None
    backend = _make_reward_backend(cfg.reward, cfg.model_path, "matcher.judge.reward")
    if not backend.supports_text:
        backend.close()
        raise ConfigError(f"matcher.judge: the {backend.name} reward backend cannot generate text; "
                          "use hf, vllm or openai")

    def align(task, predicted, annotated):
        request = TextRequest([{"role": "user", "content": align_prompt(task, predicted, annotated, template)}],
                              align_schema(len(predicted), len(annotated)),
                              32 + cfg.align_tokens_per_error * (len(predicted) + len(annotated)))
        (answer,) = backend.generate_text([request])
        return answer.text if answer.error is None else None

    align.backend = backend
    align.kind = f"llm:{backend.name}"
    return align


def text_judge(backend, max_new_tokens: int = 48, batch_size: int = 64):
    """prompts → verdict answers through `backend.generate_text` under VERDICT_SCHEMA, in batches. A request
    the backend could not answer becomes None (a judge failure after retries), never an exception."""
    from pipeline.critic.backends import TextRequest  # heavy: pulls in torch, transformers

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


def evaluate_critic(data: str | Path, config: CriticEvalConfig, progress: bool = True,
                    sources: Optional[Iterable[str]] = None, predictor: Optional[Predictor] = None,
                    desc: str = "critic eval") -> dict:
    """Summary per task and overall, per-item results, and every item that could not be scored (and why).

    `sources` keeps only items of those sources (critic sets: edit / clean / natural), so one held-out set
    reports each source apart. `predictor` (from `make_predictor`) reuses a critic already built — a loaded
    model or a fitted baseline — across several calls; the caller then owns it (and closes it).
    Time spent inside the critic's calls is reported (`critic_seconds`, also per task), apart from loading,
    fitting and scoring, so judgements/s measure the critic alone."""
    matcher = make_matcher(config)
    judge_fn = getattr(matcher, "judge", None) or getattr(matcher, "align", None)
    judge_backend = getattr(judge_fn, "backend", None)
    own = predictor is None
    try:
        predict = make_predictor(config) if own else predictor
        try:
            scored = _score_all(data, config, matcher, progress, predict, sources, desc)
        finally:
            if own and hasattr(predict, "close"):
                predict.close()
    finally:
        if judge_backend is not None:
            judge_backend.close()
    results, unscored, timing = scored
    official = isinstance(matcher, OfficialMatcher)
    return {
        "summary": summarize_official(results) if official else summarize(results, config.counting),
        "counting": config.counting,
        "matcher": config.matcher.kind + (f" ({matcher.stats()['judge']} judge)" if official else ""),
        "critic_unusable_answers": sum(timing["unusable"].values()),
        "critic_unusable_by_task": dict(timing["unusable"]),
        "critic_seconds": sum(timing["seconds"].values()),
        "critic_seconds_by_task": dict(timing["seconds"]),
        "critic_items_by_task": dict(timing["items"]),
        "judge_failures": getattr(matcher, "judge_failures", 0),
        "judge": matcher.stats() if isinstance(matcher, (LLMJudgeMatcher, OfficialMatcher)) else None,
        "unscored": unscored,
        "items": [r.to_dict() for r in results],
    }


def _score_all(data: str | Path, config: CriticEvalConfig, matcher: Matcher, progress: bool,
               predict: Predictor, sources: Optional[Iterable[str]] = None, desc: str = "critic eval"
               ) -> tuple[list, list[dict], dict[str, Counter]]:
    wanted = set(sources) if sources is not None else None
    results: list[ItemResult] = []
    unscored: list[dict] = []
    timing = {"unusable": Counter(), "seconds": Counter(), "items": Counter()}
    bar = tqdm(desc=desc, disable=not progress, unit="item")
    for chunk in _chunks(iter_bench_items(data), config.critic.batch_size, wanted):
        items = []
        for item in chunk:
            if isinstance(item, BadRecord):
                unscored.append({"position": item.position, "id": item.id, "reason": item.reason})
            else:
                items.append(item)
        if not items:
            continue
        t0 = time.perf_counter()
        answers = predict(items)
        # A chunk's time is shared evenly by its items; sets come one task per file, so chunks rarely mix.
        share = (time.perf_counter() - t0) / len(items)
        for item, answer in zip(items, answers):
            bar.update(1)
            timing["seconds"][item.task] += share
            timing["items"][item.task] += 1
            if isinstance(answer, RecordFormatError):  # the item's images are broken: it cannot be judged
                unscored.append({"id": item.id, "reason": str(answer)})
                continue
            official = isinstance(matcher, OfficialMatcher)
            try:
                if isinstance(answer, Exception):
                    raise answer
                raw = parse_critic_answer(answer)
                predicted = raw if official else parse_discrepancies(raw, item.task)
                if official and raw is not None and not isinstance(raw, (dict, list)):
                    raise RecordError("critic answer is not a JSON object or list")
            except RecordError:
                # An unusable critic answer is scored as "found nothing" and counted, as a reward would be.
                timing["unusable"][item.task] += 1
                predicted = []
            try:
                if official:  # a failed judge (JudgeFailed) drops the item, as the official evaluation does
                    results.append(score_item_official(item.id, item.task, predicted, item.annotated, matcher,
                                                       config.category_filter == "exact"))
                else:
                    annotated = parse_discrepancies(item.annotated, item.task)
                    results.append(score_item(item.id, item.task, predicted, annotated, matcher))
            except RecordError as e:  # the annotation itself is malformed, or (official) the judge failed
                unscored.append({"id": item.id, "reason": str(e)})
    bar.close()
    return results, unscored, timing


def _chunks(iterable, size: int, sources: Optional[set[str]] = None):
    chunk = []
    for x in iterable:
        if sources is not None and isinstance(x, BenchItem) and x.source not in sources:
            continue
        chunk.append(x)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


Answer = Any  # the critic's raw answer, or the exception that stands for "no usable answer"
Predictor = Callable[[list[BenchItem]], list[Answer]]  # may carry .close() (a backend to release)


def make_predictor(config: CriticEvalConfig) -> Predictor:
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
    if source.kind in ("trivial", "pixel", "structural"):
        return baseline_predictor(source.kind, source.fit_data)
    return _reward_backend_predictor(config)


def _fit_examples(path: str):
    """The training critic set's checked examples, read under the limits it was written with."""
    # heavy: pulls in torch, transformers
    from pipeline.critic.training.dataset import CriticDataError, read_examples, read_manifest

    try:
        limits = JudgementLimits.model_validate(read_manifest(Path(path)).get("limits") or {})
        return read_examples(Path(path), limits)
    except CriticDataError as e:
        raise ConfigError(f"critic.fit_data: {e}") from None


def baseline_predictor(kind: str, fit_data: Optional[str] = None) -> Predictor:
    """A non-learned critic (`pipeline/critic/baselines.py`) fitted on the training set at `fit_data`.
    An item the critic cannot judge (`CriticUnusable`, e.g. no programs for the structural one) is an
    unusable answer; images are decoded only for critics that look at them."""

    critic = make_baseline(kind, _fit_examples(fit_data) if kind != "structural" else None)

    def call(items):
        out: list[Answer] = []
        for item in items:
            try:
                reference, candidate = item.images() if critic.uses_images else (None, None)
            except RecordFormatError as e:
                out.append(e)
                continue
            try:
                out.append({"errors": critic.judge(item.task, reference, candidate, item.reference_code,
                                                   item.candidate_code)})
            except CriticUnusable as e:
                out.append(RecordError(f"{kind} critic: {e}"))
            except Exception as e:  # a critic bug on one item is that item's failure, not the run's
                out.append(RecordError(f"{kind} critic raised {type(e).__name__}: {e}"))
        return out

    call.critic = critic
    return call


def _reward_backend_predictor(config: CriticEvalConfig) -> Predictor:
    """The project's reward backend (HF / vLLM / OpenAI-compatible / fingerprint) as the critic, in batches."""
    from pipeline.critic.backends import JudgeRequest  # heavy: pulls in torch, transformers

    backend = _make_reward_backend(config.critic.reward, config.critic.model_path, "critic.reward")
    exact = config.counting == "official" and config.category_filter == "exact"

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
            if not j.valid:
                out[i] = RecordError(f"critic answer invalid: {j.reason}")
            elif exact:  # the official literal filter judges what the critic wrote, in its own format
                out[i] = j.raw
            else:
                out[i] = {"errors": j.errors}
        return out

    call.close = backend.close
    call.backend = backend
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
