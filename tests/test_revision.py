"""The revision loop's logic with a scripted policy, renderer and critic (pipeline/revision.py), its use in the
driver's held-out evaluation (pipeline/loop/stages.py), and the training-time grouping of revised turns."""

import dataclasses
import uuid
from pathlib import Path

import numpy as np
import pytest

from pipeline.render.result import RenderFailure, RenderResult
from pipeline.revision import feedback_for, revise, revision_groups, revision_turn, root_prompt_id
from pipeline.rewards.compose import Partial
from pipeline.sample import REFERENCE_TRACE, Sample
from pipeline.loop.stages import evaluate_policy, finalize_groups, revision_stage

RED = np.full((16, 16, 3), (200, 30, 30), np.uint8)
ERRORS = {  # code → the discrepancies the scripted critic lists for it
    "bad2": [{"category": "data", "severity": 1, "location": "bar 2", "description": "too short"},
             {"category": "text", "severity": 3, "location": "title", "description": "misspelled"}],
    "bad1": [{"category": "style", "severity": 2, "location": "bars", "description": "blue, not red"}],
    "good": [],
}


def _reward(code):  # fewer discrepancies, higher reward; render failures lowest
    return {"good": 1.0, "bad1": 0.6, "bad2": 0.3}.get(code, 0.0)


class ScriptedPolicy:
    """Answers prompt `root` at turn k with script[root][k]; records every prompt it was given."""

    def __init__(self, script):
        self.script, self.prompts = script, []

    def __call__(self, prompts):
        self.prompts.extend(prompts)
        out = []
        for p in prompts:
            s = dataclasses.replace(p, uid=uuid.uuid4().hex, extra=dict(p.extra))
            s.response_text = f"```python\n{self.script[root_prompt_id(p.prompt_id)][p.turn]}\n```"
            s.response_ids = [1] * (3 + p.turn)
            out.append(s)
        return out


class ScriptedRenderPool:
    def map(self, requests):
        return [RenderResult.fail(RenderFailure.SYNTAX_ERROR, "line 1: invalid syntax") if r.code == "crash"
                else RenderResult(ok=True, image=RED) for r in requests]


class ScriptedRewardPool:
    """A critic that lists ERRORS[code]; `measure` gives the Partial the real reward actors would."""

    class function:
        @staticmethod
        def finalize(samples, partials):
            for s, p in zip(samples, partials):
                s.reward = _reward(s.code)
                if p.failure:
                    s.fail("reward", p.failure)
                s.discrepancies = list(p.judgement["errors"]) if p.judgement else []
                if p.judgement:
                    s.extra["judgement"] = {"valid": True, "reason": None}
            return {"samples": len(samples)}

    def measure(self, samples):
        out = []
        for s in samples:
            if s.rendered_image is None:
                out.append(Partial(uid=s.uid, failure=f"render_failure:{s.render_error}"))
            else:
                out.append(Partial(uid=s.uid, judgement={"valid": True, "errors": ERRORS.get(s.code, [])}))
        return out


def _prompts(n):
    return [Sample(task="chart", reference_image=np.zeros((16, 16, 3), np.uint8), prompt_id=f"p{i}",
                   messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "draw"}]}],
                   ground_truth_code="good", extra={REFERENCE_TRACE: {"t": i}}) for i in range(n)]


def _loop(script, rounds, **kw):
    from pipeline.loop.stages import render_stage

    policy, render_pool, reward_pool = ScriptedPolicy(script), ScriptedRenderPool(), ScriptedRewardPool()

    def judge(samples):
        reward_pool.function.finalize(samples, reward_pool.measure(samples))

    first = policy(_prompts(len(script)))
    render_stage(first, render_pool)
    judge(first)
    return policy, revise(first, policy, lambda s: render_stage(s, render_pool), judge, rounds, **kw)


def test_best_of_keeps_the_best_attempt_and_last_keeps_the_last():
    policy, run = _loop({"p0": ["bad2", "bad1", "crash", "bad2"]}, rounds=3)
    item = run.items[0]
    assert [a.code for a in item.attempts] == ["bad2", "bad1", "crash", "bad2"]
    assert item.stopped == "rounds"
    assert item.kept("best").code == "bad1" and item.kept("last").code == "bad2"
    assert [item.kept("best", k).code for k in range(4)] == ["bad2", "bad1", "bad1", "bad1"]
    assert [a.turn for a in item.attempts] == [0, 1, 2, 3]
    assert [c.revised for c in run.costs] == [1, 1, 1] and run.costs[0].tokens == 4


def test_ties_go_to_the_earlier_attempt():
    _, run = _loop({"p0": ["bad1", "bad1"]}, rounds=1)
    assert run.items[0].kept("best") is run.items[0].attempts[0]


def test_stops_early_once_the_critic_lists_nothing():
    policy, run = _loop({"p0": ["bad1", "good", "bad2"], "p1": ["bad2", "bad1", "good"]}, rounds=2)
    a, b = run.items
    assert [s.code for s in a.attempts] == ["bad1", "good"] and a.stopped == "clean"
    assert [s.code for s in b.attempts] == ["bad2", "bad1", "good"] and b.stopped == "clean"
    # round 2 asked only the item that was not clean yet
    assert [p.prompt_id for p in policy.prompts if p.turn == 2] == ["p1@r2"]
    assert [c.revised for c in run.costs] == [2, 1]


def test_without_stop_when_clean_a_clean_answer_is_revised_too():
    policy, run = _loop({"p0": ["good", "good"]}, rounds=1, stop_when_clean=False)
    assert len(run.items[0].attempts) == 2
    assert "- none found" in policy.prompts[-1].messages[-1]["content"][-1]["text"]


def test_feedback_lists_discrepancies_most_severe_first_and_shows_the_rendering():
    policy, run = _loop({"p0": ["bad2", "good"]}, rounds=1, max_listed=1)
    turn = policy.prompts[-1]
    first_prompt = _prompts(1)[0]
    assert turn.prompt_id == "p0@r1" and turn.turn == 1
    assert turn.messages[0] == first_prompt.messages[0]
    assert turn.messages[1] == {"role": "assistant", "content": "```python\nbad2\n```"}
    parts = turn.messages[2]["content"]
    assert parts[0] == {"type": "image"} and len(turn.feedback_images) == 1
    assert turn.prompt_images[1] is run.items[0].attempts[0].rendered_image
    text = parts[1]["text"]
    assert "text (severity 3/3) at title: misspelled" in text
    assert "too short" not in text  # max_listed=1 keeps only the most severe
    assert "```python code block" in text  # the task's answer format
    assert turn.extra[REFERENCE_TRACE] == {"t": 0}  # the prompt's own annotations carry over


def test_render_errors_are_fed_back_as_text_without_an_image():
    policy, run = _loop({"p0": ["crash", "bad1"]}, rounds=1)
    turn = policy.prompts[-1]
    assert turn.feedback_images == [] and turn.extra["feedback"] == "render_error"
    text = turn.messages[-1]["content"][-1]["text"]
    assert "did not render (syntax_error)" in text and "invalid syntax" in text
    assert all(part["type"] == "text" for part in turn.messages[-1]["content"])


def test_later_rounds_show_only_the_latest_attempt():
    policy, _ = _loop({"p0": ["bad2", "bad1", "good"]}, rounds=2)
    second = [p for p in policy.prompts if p.turn == 2][0]
    assert len(second.messages) == 3  # first prompt, the latest answer, its feedback: bounded context
    assert second.messages[1]["content"] == "```python\nbad1\n```"
    assert len(second.prompt_images) == 2


def test_feedback_reads_a_measured_partial_and_invalid_or_missing_judgements():
    s = _prompts(1)[0]
    s.code, s.rendered_image = "bad1", RED
    s.extra["reward_partial"] = Partial(uid=s.uid, judgement={"valid": True, "errors": ERRORS["bad1"]})
    assert feedback_for(s).kind == "discrepancies" and feedback_for(s).discrepancies[0]["category"] == "style"
    s.extra["reward_partial"] = Partial(uid=s.uid, judgement={"valid": False, "reason": "not JSON", "errors": []})
    assert feedback_for(s).kind == "unjudged"
    s.extra["reward_partial"] = Partial(uid=s.uid, failure="blank_image")
    assert feedback_for(s).kind == "blank_image"
    s.extra.pop("reward_partial")
    assert feedback_for(s).kind == "unjudged"  # no critic term: nothing judged, the rendering is still shown
    turn = revision_turn(s)
    assert len(turn.feedback_images) == 1 and "Compare it with the reference" in turn.messages[-1]["content"][-1]["text"]
    s.code = None
    assert feedback_for(s).kind == "no_code"


def test_generate_must_answer_every_prompt():
    from pipeline.loop.stages import render_stage

    first = ScriptedPolicy({"p0": ["bad1"]})(_prompts(1))
    render_stage(first, ScriptedRenderPool())
    ScriptedRewardPool.function.finalize(first, ScriptedRewardPool().measure(first))
    with pytest.raises(ValueError, match="1 prompts"):
        revise(first, lambda prompts: [], lambda s: s, lambda s: s, rounds=1)


def test_driver_eval_reports_every_round():
    script = {"p0": ["bad2", "bad1", "good"], "p1": ["crash", "good", "good"]}
    policy = ScriptedPolicy(script)
    out = evaluate_policy(_prompts(2), policy, ScriptedRenderPool(), ScriptedRewardPool(), revision_rounds=2)
    assert out["eval/chart/reward"] == pytest.approx((0.3 + 0.0) / 2)  # first answers, as without revision
    assert out["eval/revision/round0/chart/reward"] == pytest.approx(0.15)
    assert out["eval/revision/round1/chart/reward"] == pytest.approx((0.6 + 1.0) / 2)
    assert out["eval/revision/round2/chart/reward"] == pytest.approx(1.0)
    assert out["eval/revision/round0/chart/render_ok"] == 0.5 and out["eval/revision/round1/chart/render_ok"] == 1
    assert out["eval/revision/round1/revised"] == 2 and out["eval/revision/round2/revised"] == 1
    assert out["eval/revision/round2/tokens"] == 5
    assert out["eval/revision/stopped_clean"] == 2


def test_training_stage_attaches_revisions_and_groups_them_per_prompt_and_round():
    script = {"p0": ["bad2", "bad1", "good"], "p1": ["crash", "bad2", "bad1"]}
    policy = ScriptedPolicy(script)
    render_pool, reward_pool = ScriptedRenderPool(), ScriptedRewardPool()
    from pipeline.loop.stages import render_stage, reward_stage

    prompts = _prompts(2)
    groups = [policy([prompts[0], prompts[0]]), policy([prompts[1], prompts[1]])]  # n = 2 answers each
    for g in groups:
        reward_stage(render_stage(g, render_pool), reward_pool)
        revision_stage(g, policy, render_pool, reward_pool, rounds=2)
    revised = revision_groups(groups)
    assert [[s.prompt_id for s in g] for g in revised] == [["p0@r1"] * 2, ["p0@r2"] * 2, ["p1@r1"] * 2, ["p1@r2"] * 2]
    assert all(len(s.extra["revisions"]) == 2 for g in groups for s in g)  # clean answers are revised too
    finalize_groups(reward_pool.function, groups)
    finalize_groups(reward_pool.function, revised)
    assert [s.reward for s in revised[1]] == [1.0, 1.0]
    assert all("reward_partial" not in s.extra for g in groups + revised for s in g)


# ------------------------------------------------------------------------------------------- tiny policy
def test_a_revision_turn_runs_on_the_tiny_policy_and_its_feedback_is_prompt_not_loss(models_cfg, policy_dir):
    """Two images (reference, rendering) and a multi-turn prompt: the HF rollout's log-probs match a
    teacher-forced pass over the same prompt, and in the trainer's batch the feedback is prompt (no loss)."""
    from transformers import AutoConfig

    from tests.logprobs import teacher_forced_logprobs

    from pipeline.rollout.config import SamplingConfig
    from pipeline.rollout import HFRollout
    from pipeline.training.batch import GRPORollout, build_grpo_batch

    rng = np.random.default_rng(0)
    first = Sample(task="chart", reference_image=rng.integers(0, 255, (64, 96, 3), dtype=np.uint8),
                   prompt_id="p0", messages=_prompts(1)[0].messages)
    first.code, first.rendered_image = "import matplotlib.pyplot as plt\nplt.bar([1], [2])", RED
    first.extra["reward_partial"] = Partial(uid=first.uid, judgement={"valid": True, "errors": ERRORS["bad2"]})
    turn = revision_turn(first)
    rollout = HFRollout(models_cfg, SamplingConfig(n=2, max_new_tokens=12, temperature=1.0))
    answers = rollout.generate([turn])
    assert [a.prompt_id for a in answers] == ["p0@r1"] * 2 and all(a.turn == 1 for a in answers)

    processor, model = rollout.processor, rollout.model
    a = answers[0]
    prompt_ids, expected, grid = teacher_forced_logprobs(model, processor, a)
    assert prompt_ids == a.prompt_ids and grid.shape[0] == 2
    np.testing.assert_allclose(a.response_logprobs, expected, atol=2e-3)
    prompt_len = len(prompt_ids)

    for i, s in enumerate(answers):
        s.reward = float(i)
    batch = build_grpo_batch([GRPORollout.from_sample(s) for s in answers], processor, AutoConfig.from_pretrained(policy_dir))
    for b, s in enumerate(answers):
        assert int(batch.batch["response_mask"][b].sum()) == len(s.response_ids)  # the loss covers the answer only
        real = batch.batch["attention_mask"][b, :prompt_len].bool()
        prompt = processor.tokenizer.decode(batch.batch["prompts"][b][real])
        assert "misspelled" in prompt and "plt.bar" in prompt  # feedback and the previous code: prompt tokens
        assert batch.non_tensor_batch["multi_modal_inputs"][b]["image_grid_thw"].shape[0] == 2
    assert batch.batch["advantages"].abs().sum() > 0  # a group of the prompt's revised answers



# ------------------------------------------------------------------------------------------- the commands
def _revise_cli(tmp_path, run_caches, *args, timeout=600):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "pipeline.evaluate", "revise", *args, *run_caches],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))


@pytest.mark.slow
def test_evaluate_revise_runs_every_task_on_the_tiny_models(tmp_path, run_caches):
    import json

    # The embedded default's critic is the oracle; revising clean answers too makes every round run.
    proc = _revise_cli(tmp_path, run_caches, "--rounds", "2", "--out", str(tmp_path / "out"),
                       "revision.stop_when_clean=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| task | round | render | reward | SSIM | MSE | TEDS | TEDS-S | chart F1 | SVG struct |")
    assert [line.split("|")[1:3] for line in lines[1:]] == [
        [f" {t} ", f" {k} "] for t in ("chart", "svg", "table") for k in range(3)]
    report = json.loads((tmp_path / "out" / "revision.json").read_text())
    for task in ("chart", "svg", "table"):
        rows = report["tasks"][task]
        assert rows["0"]["items"] == 2  # the embedded default's held-out split: 2 per task
        assert rows["1"]["revised"] == 2 and rows["2"]["revised"] == 2 and rows["2"]["tokens"] > 0
    assert (tmp_path / "out" / "revision.png").stat().st_size > 10_000


def test_evaluate_revise_refuses_a_bad_override(tmp_path, run_caches):
    proc = _revise_cli(tmp_path, run_caches, "--rounds", "1", "revision.keep=worst", timeout=120)
    assert proc.returncode == 2 and "revision.keep" in proc.stderr


def test_render_only_feedback_withholds_the_critics_discrepancies():
    s = _prompts(1)[0]
    s.code, s.rendered_image = "bad1", RED
    s.extra["reward_partial"] = Partial(uid=s.uid, judgement={"valid": True, "errors": ERRORS["bad1"]})
    assert feedback_for(s, "render_only").kind == "unjudged"
    turn = revision_turn(s, feedback_mode="render_only")
    text = turn.messages[-1]["content"][-1]["text"]
    assert "Compare it with the reference image" in text
    assert ERRORS["bad1"][0]["description"] not in text and ERRORS["bad1"][0]["description"] in \
        revision_turn(s).messages[-1]["content"][-1]["text"]
    assert turn.feedback_images and turn.feedback_images[0] is RED  # the rendering is still shown
    s.rendered_image, s.render_error = None, "syntax_error"
    assert feedback_for(s, "render_only").kind == "render_error"  # the renderer's own words stay
