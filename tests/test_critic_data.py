"""The critic SFT set: answers are exactly what serving admits and parses; bad rows fail naming the row."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.critic.config import FORMAT_NAMES, builtin_format
from pipeline.critic.judgement import parse_judgement
from pipeline.critic.schema import fit_text, schema_json, serialize_answer
from pipeline.critic.training.dataset import CriticDataError, make_row, read_examples, write_dataset
from pipeline.data.edits import EditNotApplicable, propose_edit
from pipeline.data.generators import generate_program, item_rng
from pipeline.sample import CATEGORIES, JudgementLimits

LIMITS = JudgementLimits(max_errors=4, max_location_chars=48, max_description_chars=96)


def _edit_labels(task: str, n: int) -> list[list[dict]]:
    """Real targeted-edit labels (no rendering): what the data builder writes for `edit` rows."""
    out = []
    for i in range(n):
        rng = item_rng(0, f"critic-data-test/{task}", i)
        code, _ = generate_program(task, rng, "html" if task == "table" else "mixed")
        try:
            _, label = propose_edit(task, code, rng)
        except EditNotApplicable:
            continue
        out.append([label.to_dict()])
    return out


@pytest.mark.parametrize("name", FORMAT_NAMES)
@pytest.mark.parametrize("task", list(CATEGORIES))
def test_edit_labels_round_trip_through_the_answer_schema(task, name):
    fmt = builtin_format(name, task)
    labels = _edit_labels(task, 40)
    assert len(labels) >= 30
    for errors in labels:
        answer = serialize_answer(task, errors, LIMITS, fmt)
        judgement = parse_judgement(answer, task, LIMITS, fmt=fmt)
        assert judgement.valid, (judgement.reason, answer)
        assert judgement.counts_consistent
        (got,) = judgement.errors
        want = errors[0]
        assert (got["category"], got["severity"]) == (want["category"], want["severity"])
        if fmt.has_location:
            assert got["location"] == fit_text(want["location"], LIMITS.max_location_chars)
            assert got["description"] == fit_text(want["description"], LIMITS.max_description_chars)
        else:  # released tables: no location field, it leads the description
            assert got["location"] == ""
            assert got["description"] == fit_text(f"{want['location']}: {want['description']}",
                                                  LIMITS.max_description_chars)
        # An answer in one format is refused under the other (the parser follows the configured format).
        other = builtin_format("ours" if name == "released" else "released", task)
        assert not parse_judgement(answer, task, LIMITS, fmt=other).valid


@pytest.mark.parametrize("task", list(CATEGORIES))
def test_data_engine_labels_parse_under_the_released_format_they_claim(task):
    """`visual_erm_answer` (pipeline/data/edits) writes the targeted-edit sets' ground truth "as Visual-ERM
    is trained to output" — the released model's format. Under that format it parses, and says the labels."""
    from pipeline.data.edits import EditLabel, visual_erm_answer

    fmt = builtin_format("released", task)
    wide = JudgementLimits()  # visual_erm_answer does not fit texts to limits: the serving defaults
    n = 0
    for i in range(30):
        rng = item_rng(0, f"critic-data-test/{task}", i)
        code, _ = generate_program(task, rng, "html" if task == "table" else "mixed")
        try:
            _, label = propose_edit(task, code, rng)
        except EditNotApplicable:
            continue
        labels = [label, EditLabel(CATEGORIES[task][0], 1, "top left", "slightly off", "hand")]
        answer = json.dumps(visual_erm_answer(task, labels))
        judgement = parse_judgement(answer, task, wide, fmt=fmt)
        assert judgement.valid and judgement.counts_consistent, (judgement.reason, answer)
        assert [(e["category"], e["severity"]) for e in judgement.errors] == [
            (lab.category, lab.severity) for lab in labels]
        assert not parse_judgement(answer, task, wide).valid  # not our format
        n += 1
    assert n >= 20


def test_fit_text_keeps_answers_inside_the_free_text_rule():
    text = 'Title "Sales\\Q1"\n\tis\x00 wrong \U0001F600 ' + "x" * 200
    fitted = fit_text(text, 40)
    assert len(fitted) <= 40 and '"' not in fitted and "\\" not in fitted
    assert all(0x20 <= ord(c) <= 0xFFFD for c in fitted)
    answer = serialize_answer("chart", [{"category": "text", "severity": 2, "location": text,
                                          "description": text}], LIMITS)
    assert parse_judgement(answer, "chart", LIMITS).valid


def test_training_answers_are_accepted_by_the_serving_grammar(policy_dir):
    """The HF backend's constrained decoder compiles this grammar (same schema, compact separators): every
    training answer must be a complete sentence of it, or the critic would be trained on what it cannot say."""
    import xgrammar as xgr

    from pipeline.models import load_processor

    tokenizer = load_processor(policy_dir).tokenizer
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer))
    for task, name in [(t, n) for t in CATEGORIES for n in FORMAT_NAMES]:
        fmt = builtin_format(name, task)
        grammar = compiler.compile_json_schema(schema_json(task, LIMITS, fmt), any_whitespace=False,
                                               separators=(",", ":"))
        answers = [serialize_answer(task, e, LIMITS, fmt) for e in _edit_labels(task, 12)]
        answers.append(serialize_answer(task, [], LIMITS, fmt))  # "nothing is wrong"
        for answer in answers:
            matcher = xgr.GrammarMatcher(grammar)
            assert matcher.accept_string(answer), answer
            assert matcher.is_completed(), answer
        bad = xgr.GrammarMatcher(grammar)  # the grammar is strict: a spaced variant is refused
        assert not bad.accept_string(answers[-1].replace(":", ": "))


def _png(color) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buf, format="PNG")
    return buf.getvalue()


def _rows(n: int = 3) -> list[dict]:
    return [make_row(task="chart", source="edit", teacher="edit-engine", index=i, split="t", seed=0,
                     reference=_png("white"), rendering=_png("red"), limits=LIMITS,
                     errors=[{"category": "style", "severity": 2, "location": "bars", "description": f"red {i}"}])
            for i in range(n)]


def test_written_set_reads_back_with_its_answers(tmp_path):
    rows = _rows() + [make_row(task="svg", source="clean", teacher="identity", index=0, split="t", seed=0,
                               reference=_png("white"), rendering=_png("white"), errors=[], limits=LIMITS)]
    manifest = write_dataset(rows, tmp_path, LIMITS)
    assert manifest["rows"] == {"chart": {"edit": 3}, "svg": {"clean": 1}}
    examples = read_examples(tmp_path, LIMITS)
    assert {e.id for e in examples} == {r["id"] for r in rows}
    svg = next(e for e in examples if e.task == "svg")
    assert svg.errors == [] and json.loads(svg.answer)["errors"] == []
    assert [e.id for e in read_examples(tmp_path, LIMITS, sources=["clean"])] == [svg.id]


def test_a_set_in_the_released_format_reads_back_under_its_manifest(tmp_path):
    fmt = builtin_format("released", "table")
    rows = [make_row(task="table", source="edit", teacher="edit-engine", index=i, split="t", seed=0,
                     reference=_png("white"), rendering=_png("red"), limits=LIMITS, answer_format=fmt,
                     errors=[{"category": "numeric", "severity": 3, "location": "row 2", "description": f"9 {i}"}])
            for i in range(2)]
    assert json.loads(rows[0]["answer"]) == {"layout_error_count": 0, "text_error_count": 0,
                                             "numeric_error_count": 1, "errors": [
                                                 {"type": "numeric_error", "description": "row 2: 9 0", "severity": 3}]}
    manifest = write_dataset(rows, tmp_path, LIMITS, answer_formats={"table": fmt})
    assert manifest["answer_formats"]["table"]["category_key"] == "type"
    examples = read_examples(tmp_path, LIMITS)
    assert [e.errors for e in examples if e.id.endswith("/0")] == [
        [{"category": "numeric", "severity": 3, "location": "", "description": "row 2: 9 0"}]]
    # The same answers declared as ours fail, naming the row and the format.
    write_dataset(rows, tmp_path / "wrong", LIMITS)
    with pytest.raises(CriticDataError, match="answer format"):
        read_examples(tmp_path / "wrong", LIMITS)


def _corrupt(tmp_path, edit):
    write_dataset(_rows(), tmp_path, LIMITS)
    file = tmp_path / "chart.parquet"
    rows = pq.read_table(file).to_pylist()
    edit(rows[1])
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), file)


def test_a_corrupt_image_fails_naming_the_row(tmp_path):
    _corrupt(tmp_path, lambda r: r["images"][1].update(bytes=b"not a png"))
    with pytest.raises(CriticDataError, match=r"chart.parquet row 1 .*rendering"):
        read_examples(tmp_path, LIMITS)


def test_a_category_outside_the_task_fails_naming_the_row(tmp_path):
    _corrupt(tmp_path, lambda r: r["extra_info"]["errors"][0].update(category="shape"))
    with pytest.raises(CriticDataError, match=r"row 1 .*'shape'.*chart categories"):
        read_examples(tmp_path, LIMITS)
    with pytest.raises(ValueError, match="not one of the chart categories"):
        make_row(task="chart", source="edit", teacher="t", index=0, split="t", seed=0, reference=_png("white"),
                 rendering=_png("red"), limits=LIMITS,
                 errors=[{"category": "layout", "severity": 2, "location": "", "description": ""}])


def test_an_answer_that_disagrees_with_its_labels_fails(tmp_path):
    _corrupt(tmp_path, lambda r: r.update(answer=r["answer"].replace('"severity":2', '"severity":3')))
    with pytest.raises(CriticDataError, match="row 1 .*disagree"):
        read_examples(tmp_path, LIMITS)


def test_an_empty_set_or_other_limits_fail(tmp_path):
    with pytest.raises(CriticDataError, match="no rows"):
        write_dataset([], tmp_path, LIMITS)
    write_dataset(_rows(), tmp_path, LIMITS)
    with pytest.raises(CriticDataError, match="no rows for tasks"):
        read_examples(tmp_path, LIMITS, tasks=["table"])
    with pytest.raises(CriticDataError, match="not a valid chart judgement"):
        read_examples(tmp_path, JudgementLimits(max_errors=4, max_location_chars=2, max_description_chars=96))


@pytest.mark.slow
def test_builder_writes_edits_clean_and_natural_rows(tmp_path, models_cfg, policy_dir):
    """A small real build: every row renders, its answer parses under the set's limits, natural rows name
    the structural teacher, and a held-out split shares no pair with the training split."""
    from pipeline.critic.training.data_builder import CriticDataConfig, build_critic_dataset

    cfg = CriticDataConfig(tasks=["svg", "table"], edits_per_task=3, clean_per_task=2, natural_per_task=2,
                           limits=LIMITS)
    manifest = build_critic_dataset(cfg, tmp_path / "train", models_cfg, progress=False)
    examples = read_examples(tmp_path / "train", LIMITS)
    by_source = {s: [e for e in examples if e.source == s] for s in ("edit", "clean", "natural")}
    assert len(by_source["edit"]) == 6 and all(e.errors for e in by_source["edit"])
    assert len(by_source["clean"]) == 4 and all(e.errors == [] for e in by_source["clean"])
    assert {e.teacher for e in by_source["natural"]} <= {"structural"}
    assert manifest["summaries"]["svg"]["natural"]["rollouts"] >= len([e for e in by_source["natural"]
                                                                       if e.task == "svg"])
    held = build_critic_dataset(cfg.model_copy(update={"split": "critic-heldout", "natural_per_task": 0}),
                                tmp_path / "held", models_cfg, progress=False)
    assert held["total_rows"] == 10
    train_refs = {e.reference.tobytes() for e in by_source["edit"]}
    assert not train_refs & {e.reference.tobytes() for e in read_examples(tmp_path / "held", LIMITS)}
