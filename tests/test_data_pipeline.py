"""synth / edits pipelines: accounting, pixel-diff filtering, parquet layout, grid — with a fake renderer for
the logic and a few real renders when pipeline.render is available."""

import hashlib
import json
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest

from pipeline.data.__main__ import main as data_cli
from pipeline.data.config import DataConfig
from pipeline.data.grid import sample_grid
from pipeline.data.pairs import make_edit_pairs
from pipeline.data.records import RecordFormatError, decode_image, read_rows
from pipeline.data.synth import synthesize
from pipeline.sample import CATEGORIES


@dataclass
class FakeResult:
    ok: bool
    image: Optional[np.ndarray] = None
    failure: Optional[str] = None
    detail: str = ""


def hash_render(task, code, config):
    """A deterministic stand-in: a different code gives a different image, unless it fails on purpose."""
    if "FAIL" in code:
        return FakeResult(False, failure="runtime_error", detail="boom")
    seed = int(hashlib.sha256(code.encode()).hexdigest()[:8], 16)
    return FakeResult(True, np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8))


def constant_render(task, code, config):
    return FakeResult(True, np.full((24, 32, 3), 255, np.uint8))


def test_synth_accounts_for_every_item(tmp_path, monkeypatch):
    calls = []

    def flaky(task, code, config):
        calls.append(code)
        return FakeResult(False, failure="timeout") if len(calls) % 4 == 0 else hash_render(task, code, config)

    s = synthesize("chart", 12, tmp_path, DataConfig(seed=3), render_fn=flaky, progress=False)
    assert (s.rendered, s.failures, s.success_rate) == (9, {"timeout": 3}, 0.75)
    rows = list(read_rows(tmp_path))
    assert len(rows) == 9
    failures = [json.loads(x) for x in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert [f["index"] for f in failures] == [3, 7, 11] and all(f["code"] for f in failures)
    row = rows[0]
    assert row["data_source"] == "visual_erm_rl/synth_chart" and row["ability"] == "chart_to_code"
    assert row["prompt"][0]["content"].startswith("<image>\n")
    assert decode_image(row["images"][0], "r").shape == (24, 32, 3)
    assert row["reward_model"]["ground_truth"] == calls[0]
    from pipeline.data.generators import synthesize_code

    assert calls[0] == synthesize_code("chart", 0, seed=3, split="train")
    assert synthesize_code("chart", 0, seed=3, split="test") != calls[0]  # splits never share items
    assert row["extra_info"]["index"] == 0 and row["extra_info"]["task"] == "chart"
    assert json.loads((tmp_path / "summary.json").read_text())["success_rate"] == 0.75


def test_edit_pairs_keep_only_visible_edits(tmp_path):
    s = make_edit_pairs("svg", 6, tmp_path, DataConfig(seed=1), render_fn=hash_render, progress=False)
    assert s.emitted == 6 and s.edits_kept >= 6 and s.edits_dropped_no_pixel_change == 0
    for row in read_rows(tmp_path):
        ref, edited = (decode_image(im, "r") for im in row["images"])
        assert np.any(ref != edited)
        errors = row["extra_info"]["errors"]
        assert 1 <= len(errors) <= 3 and all(e["category"] in CATEGORIES["svg"] for e in errors)
        answer = json.loads(row["reward_model"]["ground_truth"])
        assert len(answer["errors"]) == len(errors)


def test_edit_pairs_drop_edits_that_change_no_pixel(tmp_path):
    s = make_edit_pairs("chart", 3, tmp_path, DataConfig(seed=1, max_attempts_per_pair=2), render_fn=constant_render,
                        progress=False)
    assert s.emitted == 0 and s.edits_kept == 0
    assert s.edits_dropped_no_pixel_change > 0 and s.references_without_visible_edit == s.references_tried == 6
    assert not list(tmp_path.glob("*.parquet"))


def test_records_reject_corrupt_images():
    with pytest.raises(RecordFormatError, match="does not decode"):
        decode_image(b"not a png", "row 3")
    with pytest.raises(RecordFormatError, match="no image bytes"):
        decode_image({"bytes": None}, "row 3")


def test_grid_png(tmp_path):
    make_edit_pairs("table", 4, tmp_path / "e", DataConfig(), render_fn=hash_render, progress=False)
    out = sample_grid(tmp_path / "e", tmp_path / "grid.png", n=4, columns=4)
    from PIL import Image

    im = Image.open(out)
    assert im.size == (2 * 2 * 256, 2 * (200 + 54))


def _renderer_or_skip():
    try:
        from pipeline.render import render
    except ImportError as e:
        pytest.skip(f"pipeline.render not available: {e}")
    return render


PROBES = {"chart": "import matplotlib.pyplot as plt\nplt.plot([1, 2])",
          "svg": '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 4"><rect width="2" height="2"/></svg>',
          "table": "<table><tr><td>1</td></tr></table>"}


@pytest.mark.parametrize("task", ["chart", "svg", "table"])
def test_cli_with_real_renderer(task, tmp_path, capsys):
    render = _renderer_or_skip()
    probe = render(task, PROBES[task])
    if not probe.ok:  # e.g. no Chromium on this machine: the renderer's own tests cover that
        pytest.skip(f"{task} renderer unavailable here: {probe.failure} {probe.detail[:100]}")
    assert data_cli(["synth", "--task", task, "--n", "3", "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["rendered"] == 3
    assert data_cli(["edits", "--task", task, "--n", "2", "--out", str(tmp_path / "e"), "--no-progress"]) == 0
    rows = list(read_rows(tmp_path / "e"))
    assert len(rows) == 2
    for row in rows:
        ref, edited = (decode_image(im, "r") for im in row["images"])
        assert ref.shape == edited.shape and np.any(ref != edited)


@pytest.mark.parametrize("task", ["chart", "table", "svg"])
def test_pairs_use_distinct_categories_and_destructive_edits_only_first(task, tmp_path):
    from pipeline.data.edits import EDITS

    destructive = {e.name for e in EDITS[task] if e.destructive}
    make_edit_pairs(task, 20, tmp_path, DataConfig(seed=5, edits_per_pair=(3, 3)), render_fn=hash_render,
                    progress=False)
    sizes = []
    for row in read_rows(tmp_path):
        errors = row["extra_info"]["errors"]
        sizes.append(len(errors))
        cats = [e["category"] for e in errors]
        assert len(cats) == len(set(cats)), cats
        assert not any(e["edit"] in destructive for e in errors[1:]), errors
    assert max(sizes) == 3
