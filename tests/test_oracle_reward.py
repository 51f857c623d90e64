"""The oracle critic as a reward backend (`reward.backend: structural`): the reference program of the row against
the policy's program, through the same judgement record, formula and exclusion rules as a model critic."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipeline.critic.config import RewardConfig
from pipeline.critic.scorer import RewardScorer
from pipeline.data.compact import compact_program
from pipeline.data.generators import synthesize_code
from pipeline.data.edits import EditNotApplicable, propose_edit
from pipeline.sample import CATEGORIES, Sample


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 200, (48, 64, 3), dtype=np.uint8)


def _sample(task: str, reference: str | None, code: str | None, **kw) -> Sample:
    fields = dict(task=task, reference_image=_image(0), prompt_id=f"{task}/0", ground_truth_code=reference,
                  code=code, rendered_image=_image(1))
    return Sample(**{**fields, **kw})


def _edited(task: str, seed: int) -> tuple[str, str, dict]:
    rng = random.Random(seed)
    for i in range(50):
        reference = synthesize_code(task, seed * 100 + i)
        try:
            edited, label = propose_edit(task, reference, rng)
        except EditNotApplicable:
            continue
        return reference, edited, label
    raise AssertionError(f"no {task} edit applied")


def _scorer(**overrides) -> RewardScorer:
    return RewardScorer(RewardConfig(backend="structural", **overrides))


@pytest.mark.parametrize("task", ["chart", "table", "svg"])
def test_the_oracle_lists_the_edit_and_nothing_for_the_reference_itself(task):
    reference, edited, label = _edited(task, seed=3)
    same, wrong = _sample(task, reference, reference), _sample(task, reference, edited)
    scorer = _scorer()
    stats = scorer.score([same, wrong])
    assert stats["judged"] == 2 and stats["invalid_judgements"] == 0 and stats["excluded"] == 0
    assert same.discrepancies == []
    assert wrong.discrepancies, f"the oracle missed the edit {label}"
    assert {e["category"] for e in wrong.discrepancies} <= set(CATEGORIES[task])
    assert label.category in {e["category"] for e in wrong.discrepancies}
    # The official formula reads it like any critic's: fewer discrepancies, more reward.
    assert same.reward > wrong.reward
    assert wrong.reward_breakdown["visual_erm_official/severity"] == sum(e["severity"] for e in wrong.discrepancies)
    assert scorer.backend.name == "structural" and scorer.backend.stats.generated == 2


def test_errors_are_capped_and_fitted_to_the_answer_limits():
    reference = "import matplotlib.pyplot as plt\nplt.bar(['A','B','C'],[1,2,3],color='red')\nplt.title('Sales')\n"
    other = "import matplotlib.pyplot as plt\nplt.plot([9,8],color='blue')\nplt.xlabel('x')\nplt.ylabel('y')\n"
    sample = _sample("chart", reference, other)
    _scorer(limits={"max_errors": 2, "max_location_chars": 10, "max_description_chars": 30}).score([sample])
    assert len(sample.discrepancies) == 2
    assert all(len(e["location"]) <= 10 and len(e["description"]) <= 30 for e in sample.discrepancies)


def test_rows_without_a_usable_reference_are_counted_exclusions_never_scores():
    no_reference = _sample("svg", None, "<svg xmlns='http://www.w3.org/2000/svg'/>")
    broken_reference = _sample("svg", "<svg><rect", "<svg xmlns='http://www.w3.org/2000/svg'/>")
    good = _sample("chart", compact_program("chart", 1), compact_program("chart", 1))
    stats = _scorer().score([no_reference, broken_reference, good])
    assert no_reference.reward is None and no_reference.excluded.startswith("oracle:no_reference")
    assert broken_reference.reward is None and broken_reference.excluded.startswith("oracle:reference_unparseable")
    assert stats["excluded"] == 2 and stats["exclusions"] == {"oracle": 2}
    assert good.excluded is None and good.reward == 2.0


def test_a_policy_program_that_did_not_render_follows_the_failure_rules_unjudged():
    reference = compact_program("chart", 2)
    failed = _sample("chart", reference, "plt.plot(", rendered_image=None, render_error="syntax_error")
    scorer = _scorer()
    stats = scorer.score([failed])
    assert failed.reward == 0.0 and failed.failure and "render_failure" in failed.failure
    assert stats["judged"] == 0 and scorer.backend.stats.pairs == 0


@pytest.mark.parametrize("task", ["chart", "table", "svg"])
def test_an_unreadable_policy_program_fails_like_a_render_failure(task):
    """The official failure rule (charts/SVG 0, tables −4), not the differ's one severe error: scored S = 3, text
    that is no table beat a wrong table's S = 12 and a policy learnt to write it."""
    reference = synthesize_code(task, 11)
    sample = _sample(task, reference, "this is no program at all")
    stats = _scorer(limits={"max_errors": 4}).score([sample])
    assert sample.failure.startswith("reward:unreadable_program") and sample.excluded is None
    assert sample.reward == (-4.0 if task == "table" else 0.0) and sample.discrepancies == []
    assert stats["failures"] == {"unreadable_program": 1}


def test_a_dataset_without_reference_programs_is_refused_at_start_up():
    from types import SimpleNamespace

    from pipeline.critic.backends.structural import check_reference_programs
    from pipeline.schema import ConfigError

    rows = [SimpleNamespace(ground_truth_code=None), SimpleNamespace(ground_truth_code="  ")]
    with pytest.raises(ConfigError, match="reward.backend=structural.*none of the 2 training rows"):
        check_reference_programs(rows, "training")
    assert check_reference_programs(rows + [SimpleNamespace(ground_truth_code="<svg/>")], "training") == 2


def test_the_oracle_is_named_where_a_person_reads_the_discrepancies():
    assert RewardConfig(backend="structural").critic_label().startswith("oracle")
    assert "oracle" not in RewardConfig(backend="hf").critic_label()
