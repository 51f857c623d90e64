"""Critic and policy evaluation end to end on small files: readers, critic sources, failure accounting."""

import io
import json
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest
from PIL import Image

from pipeline.data.config import DataConfig
from pipeline.data.pairs import make_edit_pairs
from pipeline.data.synth import synthesize
from pipeline.evaluate.__main__ import main as eval_cli
from pipeline.evaluate.benchmark import evaluate_critic
from pipeline.evaluate.config import CriticEvalConfig, load_critic_config
from pipeline.evaluate.policy import evaluate_policy
from pipeline.schema import ConfigError


@dataclass
class FakeResult:
    ok: bool
    image: Optional[np.ndarray] = None
    failure: Optional[str] = None
    detail: str = ""


def code_render(task, code, config=None, trace=False):
    """Same code → same image; different code → different image (a stand-in for the real renderer)."""
    seed = sum(code.strip().encode()) % (2**32)  # whitespace around code does not change a drawing
    return FakeResult(True, np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8))


def png(color):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def vc_bench(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png("white"))
    (tmp_path / "img" / "b.png").write_bytes(png("red"))
    records = [
        {"id": "t1", "category": "table", "gt_img_path": "img/a.png", "pred_img_path": "img/b.png",
         "human_errors": [{"type": "numeric_error", "severity": 2, "description": "row North Sales value 120 wrong"}],
         "pred_json": {"errors": [{"type": "numeric_error", "severity": 2,
                                   "description": "North Sales value 120 is wrong"}]}},
        {"id": "c1", "category": "chart", "gt_img_path": "img/a.png", "pred_img_path": "img/b.png",
         "human_errors": [{"category": "text_error", "severity": 1, "location": "title", "description": "typo"}],
         "pred_json": {"errors": []}},
        {"id": "bad", "category": "video", "gt_img_path": "x", "pred_img_path": "y"},
        {"id": "s1", "category": "svg", "gt_img_path": "img/a.png", "pred_img_path": "img/missing.png",
         "human_errors": []},
    ]
    path = tmp_path / "vc.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    return path


def test_vc_rewardbench_layout_with_embedded_predictions(vc_bench):
    cfg = CriticEvalConfig.model_validate({"critic": {"kind": "records"}})
    report = evaluate_critic(vc_bench, cfg, progress=False)
    s = report["summary"]
    assert s["table"]["f1_hard"] == 1.0 and s["chart"]["f1_hard"] == 0.0
    # s1 has no pred_json → an unusable answer scored as "nothing found"; empty vs empty = 1.0
    assert s["svg"]["f1_hard"] == 1.0 and report["critic_unusable_answers"] == 1
    reasons = " ".join(u["reason"] for u in report["unscored"])
    assert "video" in reasons and "not JSON" in reasons and len(report["unscored"]) == 2


def test_callable_critic_reads_images_and_broken_images_are_counted(vc_bench, monkeypatch):
    seen = []

    def critic(task, reference, candidate):
        seen.append((task, reference[0, 0].tolist(), candidate[0, 0].tolist()))
        return 'Here: {"errors": [{"category": "text_error", "severity": 1, "location": "title", "description": "typo"}]}'

    import types, sys
    mod = types.ModuleType("fake_critic_mod")
    mod.critic = critic
    monkeypatch.setitem(sys.modules, "fake_critic_mod", mod)
    cfg = CriticEvalConfig.model_validate({"critic": {"kind": "callable", "target": "fake_critic_mod:critic"}})
    report = evaluate_critic(vc_bench, cfg, progress=False)
    assert ("chart", [255, 255, 255], [255, 0, 0]) in seen
    assert report["summary"]["chart"]["f1_hard"] == 1.0
    assert report["summary"]["table"]["f1_hard"] == 0.0  # text_error is not a table category → invalid, FP
    assert any("missing.png" in u["reason"] for u in report["unscored"])


def test_critic_cli_on_an_edit_set(tmp_path, capsys):
    make_edit_pairs("svg", 5, tmp_path / "edits", DataConfig(), render_fn=code_render, progress=False)
    (tmp_path / "oracle.yaml").write_text("critic:\n  kind: oracle\n")
    assert eval_cli(["critic", "--data", str(tmp_path / "edits"), "--critic", str(tmp_path / "oracle.yaml"),
                     "--out", str(tmp_path / "r.json"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| svg | 5 | 1.000 | 1.000 |" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["overall"]["f1_soft"] == 1.0
    (tmp_path / "bad.yaml").write_text("critic:\n  kind: callable\n")
    assert eval_cli(["critic", "--data", str(tmp_path / "edits"), "--critic", str(tmp_path / "bad.yaml"),
                     "--no-progress"]) == 2
    assert "critic.kind=callable needs critic.target" in capsys.readouterr().err


def test_predictions_file_and_typo_in_config(tmp_path):
    make_edit_pairs("chart", 3, tmp_path / "e", DataConfig(), render_fn=code_render, progress=False)
    from pipeline.data.records import read_rows

    ids = [r["id"] for r in read_rows(tmp_path / "e")]
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": ids[0], "errors": []}) + "\n" + json.dumps({"id": ids[1], "errors": "bad"}))
    cfg = CriticEvalConfig.model_validate({"critic": {"kind": "predictions", "path": str(preds)}})
    report = evaluate_critic(tmp_path / "e", cfg, progress=False)
    assert report["summary"]["chart"]["items"] == 3
    assert report["critic_unusable_answers"] == 2  # one malformed list, one missing prediction
    assert report["summary"]["chart"]["f1_hard"] == 0.0
    (tmp_path / "typo.yaml").write_text("critc:\n  kind: oracle\n")
    with pytest.raises(ConfigError, match="critc"):
        load_critic_config(tmp_path / "typo.yaml")


def test_policy_evaluation_oracle_and_responses(tmp_path):
    synthesize("table", 4, tmp_path, DataConfig(table_format="html"), render_fn=code_render, progress=False)
    oracle = evaluate_policy(tmp_path, None, render_fn=code_render, progress=False)
    s = oracle["summary"]["table"]
    assert s["teds"] == 1.0 and s["code/teds_s"] == 1.0 and s["ssim"] == 1.0 and s["mse"] == 0.0
    from pipeline.data.records import read_rows

    rows = list(read_rows(tmp_path))
    responses = {rows[0]["extra_info"]["index"]: f"```html\n{rows[0]['reward_model']['ground_truth']}\n```",
                 rows[1]["extra_info"]["index"]: "I can't read this table."}
    report = evaluate_policy(tmp_path, responses, render_fn=code_render, progress=False)
    c = report["counts"]["table"]
    assert c["items"] == 4 and c["extract_fenced"] == 1 and c["no_response"] == 2 and c["rendered"] == 1
    assert report["summary"]["table"]["teds"] == pytest.approx(0.25)  # 1 perfect of 4, failures score 0
    assert report["summary"]["table"]["mse"] == pytest.approx(0.75)


def test_reward_backend_as_critic(tmp_path):
    """The project's reward backend plugs in as the critic; the deterministic fingerprint backend's answers
    can be recomputed from each pair, so the counts are checkable."""
    fingerprint = pytest.importorskip("pipeline.critic.backends.fingerprint")
    make_edit_pairs("chart", 4, tmp_path / "e", DataConfig(), render_fn=code_render, progress=False)
    cfg = CriticEvalConfig.model_validate({"critic": {"kind": "reward_backend", "batch_size": 3,
                                                      "reward": {"backend": "fingerprint"}}})
    report = evaluate_critic(tmp_path / "e", cfg, progress=False)
    from pipeline.evaluate.records import iter_bench_items

    expected = 0
    for item in iter_bench_items(tmp_path / "e"):
        ref, cand = item.images()
        expected += len(fingerprint.expected_answer("chart", ref, cand, 1024)["errors"])
    assert report["summary"]["chart"]["items"] == 4 and report["critic_unusable_answers"] == 0
    assert report["summary"]["chart"]["n_predicted"] == expected


def test_policy_evaluation_counts_bad_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    synthesize("svg", 2, tmp_path, DataConfig(), render_fn=code_render, progress=False)
    from pipeline.data.records import read_rows

    rows = list(read_rows(tmp_path))
    rows[0]["images"] = [{"bytes": b"\x89PNG broken"}]
    rows[1]["reward_model"]["ground_truth"] = "<svg><rect></svg>"  # reference that does not parse
    extra = dict(rows[1], extra_info=dict(rows[1]["extra_info"], task="video", index=9))
    for f in tmp_path.glob("*.parquet"):
        f.unlink()
    pq.write_table(pa.Table.from_pylist(rows + [extra]), tmp_path / "bad.parquet")
    report = evaluate_policy(tmp_path, None, render_fn=code_render, progress=False)
    assert report["counts"]["svg"] == {"items": 2, "bad_record": 2}
    assert report["counts"]["video"] == {"items": 1, "bad_record": 1}
    assert len(report["items"]) == 3 and all("error" in i for i in report["items"])
