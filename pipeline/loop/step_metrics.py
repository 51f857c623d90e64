"""Per-step scalars about the samples of one update: rewards per task and component, failures by type."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from pipeline.sample import Sample


def sample_metrics(groups: list[list[Sample]], trainer_version: int) -> dict[str, float]:
    samples = [s for g in groups for s in g]
    metrics: dict[str, float] = {"samples": len(samples), "groups": len(groups)}
    # Infrastructure failures (Sample.excluded) are not scored: counted here, masked out of the update.
    excluded = Counter(s.excluded.split(":", 1)[0] for s in samples if s.excluded)
    metrics["excluded"] = sum(excluded.values())
    for reason, count in excluded.items():
        metrics[f"excluded/{reason}"] = count
    kept = [s for s in samples if not s.excluded]
    rewards = np.array([s.reward if s.reward is not None else np.nan for s in kept], dtype=float)
    metrics["reward/mean"] = float(np.nanmean(rewards)) if len(kept) else 0.0
    metrics["reward/std"] = float(np.nanstd(rewards)) if len(kept) else 0.0
    metrics["reward/missing"] = int(np.isnan(rewards).sum())  # must stay 0: every sample is scored or excluded
    metrics["scored"] = len(kept) - metrics["reward/missing"]  # a failure reward counts as scored...
    metrics["failed"] = sum(1 for s in samples if s.failure)  # ...and is also counted here, by reason below
    by_task: dict[str, list[float]] = defaultdict(list)
    components: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        if s.reward is not None:
            by_task[s.task].append(s.reward)
        for name, value in s.reward_breakdown.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                components[name].append(float(value))
    for task, values in sorted(by_task.items()):
        metrics[f"reward/{task}/mean"] = float(np.mean(values))
    for name, values in sorted(components.items()):
        metrics[f"reward_component/{name}"] = float(np.mean(values))
    render_failures = Counter(s.render_error for s in samples if s.render_error)
    for kind, count in render_failures.items():
        metrics[f"render_failures/{kind}"] = count
    metrics["render/success_rate"] = (
        sum(s.rendered_image is not None for s in samples) / len(samples) if samples else 0.0
    )
    failures = Counter((s.failure or "").split(":")[1] if s.failure and ":" in s.failure else s.failure
                       for s in samples if s.failure)
    for reason, count in failures.items():
        metrics[f"failures/{reason}"] = count
    metrics["judgement/invalid"] = sum(1 for s in samples if "invalid_judgement" in (s.failure or ""))
    # answers off the schema that the official parsing rule read leniently (a critic drifting off its format)
    metrics["judgement/lenient"] = sum(1 for s in samples if (s.extra.get("judgement") or {}).get("lenient"))
    versions = [s.policy_version for s in samples if s.policy_version is not None]
    if versions:
        # The policy versions that generated this batch: rollout workers report the weights they were sent.
        metrics["policy_version/min"] = min(versions)
        metrics["policy_version/max"] = max(versions)
        metrics["staleness/max"] = trainer_version - min(versions)
        metrics["staleness/mean"] = float(np.mean([trainer_version - v for v in versions]))
    lengths = [len(s.response_ids or ()) for s in samples]
    metrics["response/length_mean"] = float(np.mean(lengths)) if lengths else 0.0
    return metrics
