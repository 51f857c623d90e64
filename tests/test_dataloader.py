"""Prompt loading: verl-style rows become Samples; the order is seeded and resumable; bad rows are reported."""

import numpy as np
import pytest

from pipeline.data.loader import PromptLoader, load_prompts, structured_messages
from pipeline.data.records import png_bytes, write_parquet


def _row(i, task="chart", image=True, prompt=None):
    rng = np.random.default_rng(i)
    img = png_bytes(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) if image else b"not a png"
    return {
        "data_source": f"test/{task}",
        "prompt": prompt or [{"role": "user", "content": "<image>\nWrite the code."}],
        "images": [{"bytes": img}],
        "ability": f"{task}_to_code",
        "reward_model": {"style": "model", "ground_truth": f"code {i}"},
        "extra_info": {"index": i, "task": task},
    }


@pytest.fixture
def dataset(tmp_path):
    rows = [_row(i, task=("chart", "table", "svg")[i % 3]) for i in range(10)]
    rows.append(_row(10, image=False))  # corrupt image
    rows.append(_row(11, prompt=[{"role": "user", "content": "no image here"}]))
    write_parquet(rows, tmp_path / "train.parquet")
    return tmp_path / "train.parquet"


def test_rows_become_prompts_and_bad_rows_are_reported(dataset):
    prompts, rejected = load_prompts([dataset])
    assert len(prompts) == 10 and len(rejected) == 2
    assert any("row 10" in r and "does not decode" in r for r in rejected)
    assert any("row 11" in r and "exactly one image" in r for r in rejected)
    p = prompts[1]
    assert p.task == "table" and p.ground_truth_code == "code 1" and p.image.shape == (8, 8, 3)
    assert p.messages == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Write the code."}]}]


def test_structured_messages_keeps_text_around_the_image():
    msgs = structured_messages([{"role": "system", "content": "Be exact."},
                                {"role": "user", "content": "Look:\n<image>\nNow code."}], "x")
    assert msgs[0]["content"] == [{"type": "text", "text": "Be exact."}]
    assert msgs[1]["content"] == [{"type": "text", "text": "Look:"}, {"type": "image"},
                                  {"type": "text", "text": "Now code."}]


def test_order_is_seeded_covers_each_epoch_and_resumes_exactly(dataset):
    prompts, _ = load_prompts([dataset])
    a = PromptLoader(prompts, batch_size=4, seed=7)
    first_epoch = [s.ground_truth_code for _ in range(3) for s in a.next_batch()][:10]
    assert sorted(first_epoch) == sorted(f"code {i}" for i in range(10))  # a permutation, no repeats
    b = PromptLoader(prompts, batch_size=4, seed=7)
    b.next_batch(), b.next_batch()
    state = b.state_dict()  # 8 of epoch 0 drawn; the next batch crosses into epoch 1
    expected = [s.prompt_id for s in b.next_batch()] + [s.prompt_id for s in b.next_batch()]
    resumed = PromptLoader(prompts, batch_size=4, seed=7)
    resumed.load_state_dict(state)
    got = [s.prompt_id for s in resumed.next_batch()] + [s.prompt_id for s in resumed.next_batch()]
    assert got == expected
    assert len(set(got)) == len(got)  # group ids unique even when a prompt repeats across epochs
    other_seed = PromptLoader(prompts, batch_size=10, seed=8).next_batch()
    assert [s.ground_truth_code for s in other_seed] != first_epoch
    with pytest.raises(ValueError, match="does not match"):
        PromptLoader(prompts[:5], batch_size=4, seed=7).load_state_dict(state)


def test_a_chart_rows_stored_trace_reaches_its_samples_and_a_forged_one_is_ignored(tmp_path):
    import json

    trace = {"texts": ["Sales"], "layout": [[1, 1, 0, 0]], "types": ["bar"], "colors": ["#1f77b4"]}
    good = _row(0)
    good["extra_info"]["chart_trace"] = json.dumps(trace)
    forged = _row(1)
    forged["extra_info"]["chart_trace"] = json.dumps({**trace, "types": ["rm -rf"]})
    write_parquet([good, forged], tmp_path / "t.parquet")
    prompts, rejected = load_prompts([tmp_path / "t.parquet"])
    assert not rejected
    by_index = {p.source_id: p for p in prompts}
    assert by_index["test/chart#0"].extra == {"reference_chart_trace": trace}
    assert by_index["test/chart#1"].extra == {}  # invalid → traced again at evaluation, and counted there
    samples = PromptLoader(prompts, 2, seed=0).next_batch()
    with_trace = [s for s in samples if s.extra]
    assert len(with_trace) == 1 and with_trace[0].extra["reference_chart_trace"] == trace
    with_trace[0].extra["reference_chart_trace"]["texts"].append("x")  # samples must not share the prompt's dict
    assert by_index["test/chart#0"].extra["reference_chart_trace"]["texts"] == ["Sales"]
