"""The oracle critic (`reward.backend: structural`): the discrepancies a perfect critic would list, read from the
programs instead of the images.

It diffs the dataset row's reference program against the policy's program with the structural differ
(`pipeline/critic/structural`: F1 1.00 on held-out targeted edits, 0.70–0.75 on natural errors) and answers with
the same judgement record as a model critic, so the reward formula, its failure rules, the logs and the run
report treat it like any critic. It looks at no pixel: it is an upper bound on what a critic can tell the policy
(the thesis test of docs/results.md), not a model of one, and everything a person reads labels it an oracle.

Rules, in the reward's terms:
  * the policy's program did not render (or rendered blank): the failure rules fire before any critic is
    asked, as for every backend;
  * it rendered but the differ cannot read it as the task's program (text that is no table, markup that is no
    SVG, a chart program the interpreter cannot follow): the official failure rule, like a render failure —
    the judgement fails with reason `unreadable_program`, the sample fails, every term gives its failure value
    (charts/SVG 0, tables −4). (Scored instead as the differ's one severe error, S = 3, a policy trained on the
    official table reward −S learned to write text that is no table: −3 beat a wrong table's −12, and held-out
    TEDS fell to 0 in all three seeds, docs/results.md.)
  * the row has no reference program, or the differ cannot parse the reference: no judgement exists, so the
    sample is excluded from the update with the reason `oracle:no_reference` / `oracle:reference_unparseable`
    (counted under the run's exclusions), never scored;
  * the differ itself raises on a pair: the same exclusion, `oracle:differ_error` (a bug to fix, not the
    policy's fault).
Errors are capped at `reward.limits.max_errors` (most severe kept) and their texts fitted to the limits: the
oracle can say no more than a model critic under the same answer schema.
"""

from __future__ import annotations

import json
import logging

from pipeline.critic.backends.base import BackendStats, JudgeRequest, RewardBackend
from pipeline.critic.judgement import ORACLE_EXCLUSION, UNREADABLE_PROGRAM, Judgement
from pipeline.critic.schema import answer_document, fit_text
from pipeline.critic.structural import StructuralDiffError, is_unreadable, structural_diff
from pipeline.sample import CATEGORIES
from pipeline.schema import ConfigError

log = logging.getLogger(__name__)


def check_reference_programs(prompts, where: str) -> int:
    """How many of `prompts` (anything with `ground_truth_code`) lack a reference program; ConfigError when all do:
    the oracle would then exclude every sample, so a run must not start on them."""
    missing = sum(1 for p in prompts if not (getattr(p, "ground_truth_code", None) or "").strip())
    if prompts and missing == len(prompts):
        raise ConfigError(f"reward.backend=structural diffs the policy's program against the row's reference program, "
                          f"and none of the {len(prompts)} {where} rows has one (verl parquet: "
                          f"reward_model.ground_truth); use a model critic (reward.backend=hf|vllm|openai)")
    if missing:
        log.warning("oracle critic: %d of %d %s rows have no reference program; their samples are excluded from "
                    "the update (counted under exclusions/oracle)", missing, len(prompts), where)
    return missing


class StructuralBackend(RewardBackend):
    name = "structural"

    def _generate(self, task, pairs, attempt):  # pragma: no cover - _score never asks for images
        raise NotImplementedError("the structural oracle judges programs, not images")

    def _score(self, requests: list[JudgeRequest], stats: BackendStats) -> list[Judgement]:
        out = []
        for req in requests:
            stats.pairs += 1
            judgement = self._judge(req)
            if not judgement.valid:
                stats.invalid_judgements += 1
                stats.count(judgement.reason or "unknown")
            else:
                stats.generated += 1
            out.append(judgement)
        return out

    def _judge(self, req: JudgeRequest) -> Judgement:
        if req.task not in CATEGORIES:
            return Judgement.failed(str(req.task), f"bad_input:unknown task {req.task!r}")
        if not (req.reference_code or "").strip():
            return Judgement.failed(req.task, f"{ORACLE_EXCLUSION}no_reference: the dataset row has no reference "
                                              "program to diff against")
        limits = self.cfg.limits
        try:
            errors = structural_diff(req.task, req.reference_code, req.code or "", max_errors=limits.max_errors)
            if is_unreadable(errors):
                return Judgement.failed(req.task, f"{UNREADABLE_PROGRAM} {errors[0]['description']}"[:300])
        except StructuralDiffError as e:
            return Judgement.failed(req.task, f"{ORACLE_EXCLUSION}reference_unparseable: {e}"[:300])
        except Exception as e:  # a differ bug costs this pair (excluded, counted), not the batch
            log.exception("structural differ failed on a %s pair", req.task)
            return Judgement.failed(req.task, f"{ORACLE_EXCLUSION}differ_error: {type(e).__name__}: {e}"[:300])
        errors = [{**e, "location": fit_text(e["location"], limits.max_location_chars),
                   "description": fit_text(e["description"], limits.max_description_chars)} for e in errors]
        counts = {c: sum(e["category"] == c for e in errors) for c in CATEGORIES[req.task]}
        raw = json.dumps(answer_document(req.task, errors, self.formats[req.task]), separators=(",", ":"))
        return Judgement(task=req.task, valid=True, errors=errors, counts=counts, raw=raw)
