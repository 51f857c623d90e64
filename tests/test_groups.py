import numpy as np
import pytest

from pipeline.loop.groups import GroupAssembler
from pipeline.sample import Sample


def _s(pid, uid):
    return Sample(task="svg", reference_image=np.zeros((2, 2, 3), np.uint8), prompt_id=pid, uid=uid)


def test_groups_release_only_when_complete_and_in_any_order():
    g = GroupAssembler()
    g.expect("a", 3)
    g.expect("b", 2)
    assert g.waiting_samples == 5
    assert g.add(_s("a", "a1")) is None
    assert g.add(_s("b", "b2")) is None
    assert g.add(_s("a", "a3")) is None
    done_b = g.add(_s("b", "b1"))
    assert [s.uid for s in done_b] == ["b2", "b1"]
    done_a = g.add(_s("a", "a2"))
    assert sorted(s.uid for s in done_a) == ["a1", "a2", "a3"]
    assert g.open_groups == 0 and g.waiting_samples == 0


def test_unknown_duplicate_and_reopened_groups_are_errors():
    g = GroupAssembler()
    g.expect("a", 2)
    with pytest.raises(KeyError):
        g.add(_s("zzz", "x"))
    g.add(_s("a", "a1"))
    with pytest.raises(ValueError, match="twice"):
        g.add(_s("a", "a1"))
    with pytest.raises(ValueError, match="already open"):
        g.expect("a", 2)
    with pytest.raises(ValueError):
        g.expect("c", 0)


def test_step_metrics_count_scored_and_failed_samples_and_policy_versions():
    from pipeline.loop.step_metrics import sample_metrics

    def sample(prompt_id, reward, failure=None, version=0):
        s = Sample(task="chart", reference_image=np.zeros((2, 2, 3), np.uint8), prompt_id=prompt_id)
        s.reward, s.failure, s.policy_version = reward, failure, version
        return s

    groups = [[sample("a", 1.0, version=2), sample("a", 0.0, "render:syntax_error", version=3)],
              [sample("b", 0.0, "reward:no_code", version=3), sample("b", None, version=3)]]
    m = sample_metrics(groups, trainer_version=3)
    assert m["samples"] == 4 and m["scored"] == 3 and m["reward/missing"] == 1
    assert m["failed"] == 2 and m["failures/syntax_error"] == 1 and m["failures/no_code"] == 1
    assert m["policy_version/min"] == 2 and m["policy_version/max"] == 3 and m["staleness/max"] == 1
