"""`python -m pipeline.data import`: each public layout, built small in tmp_path, converts to parquet the
driver reads; references render in our real sandbox; what cannot be used is listed, never silently dropped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from pipeline.config import REPO_ROOT
from pipeline.data.importers import FAILURES_FILE, REPORT_FILE, import_dataset
from pipeline.data.importers.formats import SourceError, pubtabnet_html
from pipeline.data.loader import load_prompts
from pipeline.data.records import read_rows

CHART = """import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3))
ax.bar(["a", "b", "c"], [3, 1, 2], color="tab:blue")
ax.set_title("Sales")
plt.savefig("bar_1.png")
"""
BROKEN_CHART = "import matplotlib.pyplot as plt\nimport a_module_nobody_has\nplt.plot([1, 2])\n"
SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
       '<rect x="10" y="10" width="60" height="40" fill="#c00"/>'
       '<circle cx="70" cy="70" r="20" fill="#06c"/></svg>')
BROKEN_SVG = '<svg xmlns="http://www.w3.org/2000/svg"><rect x="1"'
TABLE = "<table><tr><th>Year</th><th>Value</th></tr><tr><td>2020</td><td>12</td></tr></table>"
MARKDOWN = "| a | b |\n|---|---|\n| 1 | 2 |\n"


def picture(path: Path, size=(120, 90), color=(30, 90, 200)) -> Path:
    """A small non-blank reference image (what a benchmark ships next to its code)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    draw.rectangle([10, 10, size[0] - 20, size[1] - 30], fill=color)
    draw.text((12, size[1] - 25), "ref", fill="black")
    im.save(path)
    return path


def jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def convert(fmt: str, src: Path, out: Path, **kw):
    summary = import_dataset(fmt, src, out, progress=False, **kw)
    prompts, rejected = load_prompts([out])  # what the driver reads: every written row must be usable
    assert rejected == [] and len(prompts) == summary.written
    report = json.loads((out / REPORT_FILE).read_text())
    failures = [json.loads(line) for line in (out / FAILURES_FILE).read_text().splitlines()]
    # the accounting adds up: each item read is written or excluded, each exclusion/flag is listed
    assert summary.read == summary.written + summary.excluded_total, report
    assert len(failures) == summary.excluded_total + summary.flagged
    assert report["written"] == summary.written
    return summary, prompts, {f["id"]: f for f in failures}


def rows_by_id(out: Path) -> dict[str, dict]:
    return {r["extra_info"]["source_id"]: r for r in read_rows(out)}


# --------------------------------------------------------------------------------------------- fixtures
def chartmimic_folder(root: Path) -> Path:
    src = root / "ori_500"
    (src).mkdir(parents=True)
    picture(src / "bar_1.png")
    (src / "bar_1.py").write_text(CHART)
    picture(src / "line_2.png")
    (src / "line_2.py").write_text(BROKEN_CHART)  # needs a package our sandbox lacks
    picture(src / "lonely.png")  # no code next to it
    (src / "code_only.py").write_text(CHART)  # no image: our rendering becomes the reference
    return src


def test_chartmimic_folder(tmp_path):
    src = chartmimic_folder(tmp_path)
    summary, prompts, failures = convert("chartmimic", src, tmp_path / "out")
    assert summary.read == 4 and summary.written == 3 and summary.per_task == {"chart": 3}
    assert failures["lonely"]["reason"] == "no_code" and failures["lonely"]["status"] == "excluded"
    # the source image stays the reference; a reference code that does not render is kept, flagged
    assert failures["line_2"]["status"] == "kept_flagged"
    assert failures["line_2"]["reason"] == "render:runtime_error"
    rows = rows_by_id(tmp_path / "out")
    assert rows["line_2"]["extra_info"]["reference_renders"] is False
    assert rows["bar_1"]["extra_info"]["reference_image"] == "source"
    assert rows["code_only"]["extra_info"]["reference_image"] == "rendered"
    assert rows["bar_1"]["reward_model"]["ground_truth"] == CHART
    assert rows["bar_1"]["extra_info"]["chart_trace"]  # rendered with its trace, like the synthetic set
    by_source = {p.source_id.split("#")[0]: p for p in prompts}
    assert set(by_source) == {"import/chartmimic"}
    sizes = {p.image.shape[:2] for p in prompts}
    assert (90, 120) in sizes and len(sizes) == 2  # the source's own image, and our 640x480 rendering
    # --drop-unrendered excludes the flagged one instead
    strict, _, failures = convert("chartmimic", src, tmp_path / "strict", drop_unrendered=True)
    assert strict.written == 2 and failures["line_2"]["status"] == "excluded"


def test_chart2code_json(tmp_path):
    picture(tmp_path / "images" / "c1.png")
    answer = f"Here is the code:\n```python\n{CHART}```"
    (tmp_path / "chart2code.json").write_text(json.dumps([
        {"id": "c1", "image": "images/c1.png", "conversations": [
            {"from": "human", "value": "<image>\nRedraw this chart with matplotlib."},
            {"from": "gpt", "value": answer}]},
        {"id": "c2", "image": "images/missing.png", "conversations": [{"from": "gpt", "value": answer}]},
        {"id": "c3", "image": "images/c1.png", "conversations": [{"from": "gpt", "value": "I cannot."}]},
    ]))
    summary, _, failures = convert("chart2code", tmp_path / "chart2code.json", tmp_path / "out")
    assert summary.written == 1
    assert failures["c2"]["reason"] == "image_missing" and failures["c3"]["reason"] == "no_code"
    assert rows_by_id(tmp_path / "out")["c1"]["reward_model"]["ground_truth"] == CHART.strip("\n")


def test_omnidocbench_tables(tmp_path):
    picture(tmp_path / "images" / "page1.jpg", size=(400, 300))
    (tmp_path / "OmniDocBench.json").write_text(json.dumps([{
        "page_info": {"image_path": "page1.jpg", "page_no": 0, "width": 400, "height": 300},
        "layout_dets": [
            {"category_type": "text_block", "poly": [0, 0, 100, 0, 100, 20, 0, 20], "text": "prose"},
            {"category_type": "table", "anno_id": 3, "poly": [20, 40, 220, 40, 220, 160, 20, 160],
             "html": TABLE, "attribute": {"table_layout": "vertical"}},
            {"category_type": "table", "anno_id": 4, "ignore": True, "poly": [0, 0, 9, 0, 9, 9, 0, 9],
             "html": TABLE},
            {"category_type": "table", "anno_id": 5, "poly": [0, 0, 50, 0, 50, 50, 0, 50]},
        ]}]))
    summary, prompts, failures = convert("omnidocbench", tmp_path / "OmniDocBench.json", tmp_path / "out")
    assert summary.read == 3 and summary.written == 1 and summary.per_task == {"table": 1}
    assert failures["page1#4"]["reason"] == "ignored_in_benchmark"
    assert failures["page1#5"]["reason"] == "no_code"
    assert prompts[0].image.shape[:2] == (120, 200)  # the table's region of the page, not the page
    meta = json.loads(rows_by_id(tmp_path / "out")["page1#3"]["extra_info"]["meta"])
    assert meta["table_layout"] == "vertical"


PUBTABNET_ROW = {
    "filename": "PMC1_003.png", "split": "train", "imgid": 7,
    "html": {"structure": {"tokens": [
        "<thead>", "<tr>", "<td>", "</td>", "<td", ' colspan="2"', ">", "</td>", "</tr>", "</thead>",
        "<tbody>", "<tr>", "<td>", "</td>", "<td>", "</td>", "<td>", "</td>", "</tr>", "</tbody>"]},
        "cells": [{"tokens": list("Year"), "bbox": [1, 1, 9, 9]}, {"tokens": ["<b>", *"Value", "</b>"]},
                  {"tokens": list("2020")}, {"tokens": list("1<2")}, {"tokens": []}]},
}


def test_pubtabnet_html_reconstruction():
    assert pubtabnet_html(PUBTABNET_ROW["html"]) == (
        '<table><thead><tr><td>Year</td><td colspan="2"><b>Value</b></td></tr></thead>'
        "<tbody><tr><td>2020</td><td>1&lt;2</td><td></td></tr></tbody></table>")


def test_pubtabnet_jsonl(tmp_path):
    picture(tmp_path / "train" / "PMC1_003.png")
    bad = json.loads(json.dumps(PUBTABNET_ROW))
    bad["imgid"], bad["html"]["cells"] = 8, bad["html"]["cells"][:2]
    src = jsonl(tmp_path / "PubTabNet_2.0.0.jsonl", [PUBTABNET_ROW, bad, "{not json"])
    summary, _, failures = convert("pubtabnet", src, tmp_path / "out")
    assert summary.written == 1
    assert failures["8"]["reason"] == "bad_annotation"
    assert "5 cells in the structure" in failures["8"]["detail"]
    assert failures["3"]["reason"] == "bad_record"
    assert rows_by_id(tmp_path / "out")["7"]["reward_model"]["ground_truth"].startswith("<table><thead>")


def test_unisvg_jsonl(tmp_path):
    picture(tmp_path / "png" / "u1.png")
    src = jsonl(tmp_path / "unisvg.jsonl", [
        {"id": "u1", "image": "png/u1.png", "conversations": [
            {"from": "human", "value": "<image>\nWrite the SVG code of this image."},
            {"from": "gpt", "value": SVG}]},
        {"id": "u2", "image": "png/u1.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the circle?"},
            {"from": "gpt", "value": "Blue."}]},
        {"id": "u3", "svg": SVG},  # text-to-SVG item without a raster: rendered
    ])
    summary, _, failures = convert("unisvg", src, tmp_path / "out")
    assert summary.written == 2 and summary.rendered_reference == 1
    assert failures["u2"]["reason"] == "no_code"


def test_svg_folder(tmp_path):
    src = tmp_path / "icons"
    (src / "sub").mkdir(parents=True)
    (src / "a.svg").write_text(SVG)
    (src / "sub" / "b.svg").write_text(SVG.replace("#c00", "#0a0"))
    (src / "broken.svg").write_text(BROKEN_SVG)
    summary, prompts, failures = convert("svg-folder", src, tmp_path / "out")
    assert summary.written == 2 and summary.rendered_reference == 2
    # code only: a reference that does not render has no image, so it is excluded (and listed)
    assert (failures["broken.svg"]["status"], failures["broken.svg"]["reason"]) == (
        "excluded", "render:syntax_error")
    assert {p.task for p in prompts} == {"svg"}


def test_generic_folder_task_from_extension(tmp_path):
    src = tmp_path / "mixed"
    picture(src / "a.png")
    (src / "a.py").write_text(CHART)
    (src / "b.svg").write_text(SVG)
    picture(src / "c.jpg")
    (src / "c.html").write_text(TABLE)
    (src / "d.md").write_text(MARKDOWN)
    (src / "notes.txt").write_text("not part of the set")
    summary, _, _ = convert("folder", src, tmp_path / "out")
    assert summary.per_task == {"chart": 1, "svg": 1, "table": 2} and summary.rendered_reference == 2
    assert sorted(p.name for p in (tmp_path / "out").glob("*.parquet")) == [
        "chart_train.parquet", "svg_train.parquet", "table_train.parquet"]


def test_jsonl_with_custom_fields(tmp_path):
    picture(tmp_path / "img" / "t.png")
    src = jsonl(tmp_path / "mine.jsonl", [
        {"png": "img/t.png", "answer": TABLE, "kind": "table"},
        {"answer": SVG, "kind": "svg"},
        {"png": "img/t.png", "answer": CHART, "kind": "plot"},
        {"png": "img/t.png", "kind": "svg"},
    ])
    summary, _, failures = convert("jsonl", src, tmp_path / "out",
                                   fields={"image": "png", "code": "answer", "task": "kind"})
    assert summary.per_task == {"table": 1, "svg": 1}
    assert failures["3"]["reason"] == "unknown_task" and failures["4"]["reason"] == "no_code"


def test_hf_disk(tmp_path):
    datasets = pytest.importorskip("datasets", reason="hf-disk needs the datasets package")
    ds = datasets.Dataset.from_dict(
        {"image": [str(picture(tmp_path / "i0.png")), str(picture(tmp_path / "i1.png"))],
         "code": [SVG, CHART], "task": ["svg", "chart"]},
    ).cast_column("image", datasets.Image())
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "saved"))
    summary, prompts, _ = convert("hf-disk", tmp_path / "saved", tmp_path / "out", source_split="test")
    assert summary.per_task == {"svg": 1, "chart": 1} and summary.rendered_reference == 0
    assert {p.image.shape[:2] for p in prompts} == {(90, 120)}


def test_wrong_source_is_a_clear_error(tmp_path):
    (tmp_path / "x.jsonl").write_text("{}\n")
    with pytest.raises(SourceError, match="chartmimic: expected a folder"):
        import_dataset("chartmimic", tmp_path / "x.jsonl", tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="unknown import format 'csv'"):
        import_dataset("csv", tmp_path / "x.jsonl", tmp_path / "out", progress=False)


def test_cli_prints_the_counts_and_writes_the_report(tmp_path):
    src = tmp_path / "icons"
    src.mkdir()
    (src / "a.svg").write_text(SVG)
    (src / "broken.svg").write_text(BROKEN_SVG)
    proc = subprocess.run([sys.executable, "-m", "pipeline.data", "import", "--format", "svg-folder",
                           str(src), "--out", str(tmp_path / "out"), "--no-progress"],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 written" in proc.stdout and "1 excluded (render:syntax_error 1)" in proc.stdout
    missing = subprocess.run([sys.executable, "-m", "pipeline.data", "import", "--format", "jsonl",
                              str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o2")],
                             capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_driver_trains_one_step_on_imported_sets(tmp_path, run_caches):
    """The imported parquet is what the driver reads: one GRPO step on three formats' output (all tasks)."""
    sets = []
    for fmt, src in (("chartmimic", chartmimic_folder(tmp_path / "cm")),
                     ("pubtabnet", jsonl(tmp_path / "ptn" / "p.jsonl", [PUBTABNET_ROW])),
                     ("svg-folder", tmp_path / "svgs")):
        if fmt == "pubtabnet":
            picture(tmp_path / "ptn" / "train" / "PMC1_003.png")
        if fmt == "svg-folder":
            src.mkdir()
            (src / "a.svg").write_text(SVG)
        summary = import_dataset(fmt, src, tmp_path / "data" / fmt, progress=False)
        assert summary.written
        sets.append(str(tmp_path / "data" / fmt))
    run_dir = tmp_path / "runs" / "imported"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipeline" / "main.py"), "ray.address=local",
         f"run.output_dir={run_dir.parent}", f"run.name={run_dir.name}", "run.total_steps=1",
         "logging.wandb.mode=disabled", f"data.train_paths=[{','.join(sets)}]", "data.prompts_per_step=2",
         "rollout.sampling.n=2", "trainer.micro_batch_size_per_device=4", *run_caches],
        capture_output=True, text=True, timeout=1500, cwd=tmp_path, env=dict(os.environ, RAY_ADDRESS=""))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "data: 5 train prompts" in proc.stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "train/version" in r]
    assert len(steps) == 1 and steps[0]["train/version"] == 1 and steps[0]["samples/scored"] == 4, (
        {k: v for k, v in steps[0].items() if k.startswith("samples/")}, proc.stderr[-4000:])
