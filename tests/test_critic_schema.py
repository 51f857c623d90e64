"""Critic answer format: JSON Schema and pydantic models agree; answers are parsed strictly, and every way an
answer can be wrong becomes an invalid judgement with a reason (never an exception)."""

import json

import jsonschema
import pytest
from pydantic import ValidationError

from pipeline.critic.judgement import parse_judgement
from pipeline.critic.prompts import messages, prompt
from pipeline.critic.schema import json_schema, judgement_model, worst_case_tokens
from pipeline.sample import CATEGORIES, JudgementLimits

LIMITS = JudgementLimits(max_errors=3, max_location_chars=10, max_description_chars=20)


def _doc(task, errors=None, counts=None):
    errors = errors if errors is not None else [
        {"category": CATEGORIES[task][0], "severity": 2, "location": "title", "description": "wrong word"}]
    if counts is None:
        counts = {c: sum(e["category"] == c for e in errors) for c in CATEGORIES[task]}
    return {"errors": errors, "counts": counts}


def _bad_docs(task):
    cat = CATEGORIES[task][0]
    err = {"category": cat, "severity": 1, "location": "x", "description": "y"}
    zero = {c: 0 for c in CATEGORIES[task]}
    return {
        "unknown category": _doc(task, [dict(err, category="colour")]),
        "other task's category": _doc(task, [dict(err, category="numeric" if task != "table" else "shape")]),
        "severity 4": _doc(task, [dict(err, severity=4)]),
        "severity 0": _doc(task, [dict(err, severity=0)]),
        "severity as string": _doc(task, [dict(err, severity="2")]),
        "extra key in error": _doc(task, [dict(err, confidence=0.5)]),
        "missing description": _doc(task, [{k: v for k, v in err.items() if k != "description"}]),
        "location too long": _doc(task, [dict(err, location="x" * 11)]),
        "description too long": _doc(task, [dict(err, description="y" * 21)]),
        "quote in text": _doc(task, [dict(err, description='say "hi"')]),
        "control char in text": _doc(task, [dict(err, description="a\tb")]),
        "DEL in text": _doc(task, [dict(err, description="a\x7fb")]),
        "C1 control in text": _doc(task, [dict(err, location="a\x85")]),
        "emoji in text": _doc(task, [dict(err, description="ok 😀")]),
        "lone surrogate in text": _doc(task, [dict(err, description="a\ud800")]),
        "backslash in text": _doc(task, [dict(err, location="a\\b")]),
        "too many errors": _doc(task, [err] * 4),
        "negative count": {"errors": [], "counts": dict(zero, **{cat: -1})},
        "count too large": {"errors": [], "counts": dict(zero, **{cat: 4})},
        "missing count": {"errors": [], "counts": {c: 0 for c in CATEGORIES[task][1:]}},
        "missing counts": {"errors": []},
        "extra top-level key": {"errors": [], "counts": zero, "score": 3},
        "errors not a list": {"errors": err, "counts": zero},
        "not an object": [err],
    }


@pytest.mark.parametrize("task", list(CATEGORIES))
def test_schema_and_pydantic_model_accept_and_reject_the_same_documents(task):
    schema = json_schema(task, LIMITS)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    model = judgement_model(task, LIMITS)
    good = [_doc(task), _doc(task, errors=[]), _doc(task, [
        {"category": c, "severity": s, "location": "ünï ✓", "description": "数据 differs"}
        for c, s in zip(CATEGORIES[task], (1, 2, 3))])]
    for doc in good:
        assert validator.is_valid(doc), doc
        model.model_validate(doc)  # raises if the model disagrees
        assert parse_judgement(json.dumps(doc), task, LIMITS).valid
    for name, doc in _bad_docs(task).items():
        assert not validator.is_valid(doc), name
        with pytest.raises(ValidationError):
            model.model_validate(doc)
        j = parse_judgement(json.dumps(doc), task, LIMITS)
        assert not j.valid and j.reason.startswith("schema:"), (name, j.reason)


def _released(task, doc):
    """Our-format document → the released model's shape, by hand (counts first as <name>_error_count fields,
    `_error` suffixes; tables `type`, no location, order type/description/severity). Malformed parts carry
    over as they are, so a bad document stays bad."""
    if not isinstance(doc, dict):
        return doc
    out = {}
    counts = doc.get("counts")
    if isinstance(counts, dict):
        out.update({f"{c}_error_count": n for c, n in counts.items()})
    errors = doc.get("errors")
    if isinstance(errors, list):
        conv = []
        for e in errors:
            e = dict(e)
            if isinstance(e.get("category"), str):
                e["category"] += "_error"
            if task == "table":  # no location in the released table format
                e["type"] = e.pop("category")
                e.pop("location", None)
            conv.append(e)
        errors = conv
    out["errors"] = errors
    out.update({k: v for k, v in doc.items() if k not in ("errors", "counts")})
    if "errors" not in doc:
        del out["errors"]
    return out


@pytest.mark.parametrize("task", list(CATEGORIES))
def test_released_format_schema_and_model_agree(task):
    from pipeline.critic.config import builtin_format

    fmt = builtin_format("released", task)
    schema = json_schema(task, LIMITS, fmt)
    assert list(schema["properties"])[-1] == "errors"  # counts first
    assert list(schema["properties"]["errors"]["items"]["properties"]) == (
        ["type", "description", "severity"] if task == "table" else
        ["category", "severity", "location", "description"])
    validator = jsonschema.Draft202012Validator(schema)
    model = judgement_model(task, LIMITS, fmt)
    good = [_released(task, _doc(task)), _released(task, _doc(task, errors=[]))]
    for doc in good:
        assert validator.is_valid(doc), doc
        model.model_validate(doc)
        j = parse_judgement(json.dumps(doc), task, LIMITS, fmt=fmt)
        assert j.valid and j.counts_consistent and {e["category"] for e in j.errors} <= set(CATEGORIES[task])
    # Faults in the location text do not exist where there is no location field.
    skip = {"location too long", "backslash in text", "C1 control in text"} if task == "table" else set()
    for name, doc in _bad_docs(task).items():
        if name in skip:
            continue
        doc = _released(task, doc)
        assert not validator.is_valid(doc), (name, doc)
        with pytest.raises(ValidationError):
            model.model_validate(doc)
        assert not parse_judgement(json.dumps(doc), task, LIMITS, fmt=fmt).valid, name
    # Our format's answer is not the released one's, and vice versa.
    assert not validator.is_valid(_doc(task))
    assert not parse_judgement(json.dumps(good[0]), task, LIMITS).valid


def test_categories_match_the_evaluation_and_the_paper():
    assert CATEGORIES == {"chart": ("structure", "data", "text", "style"), "table": ("layout", "text", "numeric"),
                          "svg": ("structure", "shape", "style", "text_symbol")}
    critic = pytest.importorskip("pipeline.metrics.critic", reason="pipeline.evaluate not importable yet")
    assert critic.CATEGORIES == CATEGORIES


def test_parse_reports_why_an_answer_is_invalid():
    task = "chart"
    ok = json.dumps(_doc(task))
    assert parse_judgement(ok, task, LIMITS).severity == 2
    assert parse_judgement("", task, LIMITS).reason == "empty"
    assert parse_judgement("I think they match.", task, LIMITS).reason == "not_json"
    assert parse_judgement(ok[:-5], task, LIMITS).reason == "not_json"
    assert parse_judgement(ok[:-5], task, LIMITS, finish_reason="length").reason == "truncated"
    assert parse_judgement("[" * 100000, task, LIMITS).reason == "not_json"  # deep nesting: no crash
    fenced = parse_judgement(f"Here you go:\n```json\n{ok}\n```", task, LIMITS)  # unconstrained endpoints
    assert fenced.valid and fenced.errors[0]["description"] == "wrong word"
    inconsistent = parse_judgement(json.dumps(_doc(task, counts={"structure": 0, "data": 0, "text": 0,
                                                                 "style": 0})), task, LIMITS)
    assert inconsistent.valid and not inconsistent.counts_consistent
    both = parse_judgement(json.dumps(_doc(task, [
        {"category": "data", "severity": 3, "location": "bar 2", "description": "height"},
        {"category": "text", "severity": 1, "location": "title", "description": "typo"}])), task, LIMITS)
    assert both.severity == 4 and both.counts == {"structure": 0, "data": 1, "text": 1, "style": 0}
    assert both.counts_consistent


@pytest.mark.parametrize("task", list(CATEGORIES))
def test_worst_case_tokens_bounds_the_longest_valid_answer(task):
    # The longest valid document: max errors, longest category, every text at its limit in 3-byte characters.
    longest = max(CATEGORIES[task], key=len)
    err = {"category": longest, "severity": 3, "location": "数" * LIMITS.max_location_chars,
           "description": "\ufffd" * LIMITS.max_description_chars}
    doc = {"errors": [err] * LIMITS.max_errors, "counts": {c: LIMITS.max_errors for c in CATEGORIES[task]}}
    assert json_schema(task, LIMITS) and parse_judgement(json.dumps(doc, ensure_ascii=False), task, LIMITS).valid
    n_bytes = len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())
    assert worst_case_tokens(task, LIMITS) == n_bytes + 1  # + the stop token; tight, not just an upper bound


@pytest.mark.parametrize("task", list(CATEGORIES))
def test_prompt_names_exactly_the_task_categories_and_two_images(task):
    text = prompt(task)
    for c in CATEGORIES[task]:
        assert f"- {c}:" in text and f'"{c}": <n>' in text
    others = {c for t, cs in CATEGORIES.items() if t != task for c in cs} - set(CATEGORIES[task])
    for c in others:
        assert f"- {c}:" not in text
    content = messages(task)[0]["content"]
    assert [p["type"] for p in content] == ["text", "image", "text", "image", "text"]
    assert "Reference" in content[0]["text"] and "Rendered" in content[2]["text"]


@pytest.mark.parametrize("bad", [b"\xe0\x80\x80", b"\xe0\x9f\xbf", b"\xed\xa0\x80", b"\xf0\x80\x80\x80",
                                 b"\xf0\x9f\x98\x80", b"\xc0\x80", b"\x7f", b"\t"])
def test_xgrammar_constraint_admits_only_text_that_decodes_within_the_limits(bad):
    """The grammar the HF backend decodes with must not admit byte sequences that are invalid UTF-8 (they
    decode to U+FFFD and break the length limit) — a real failure seen with a single merged class."""
    import xgrammar as xgr
    from xgrammar.testing import _get_matcher_from_grammar

    from pipeline.critic.schema import schema_json

    grammar = xgr.Grammar.from_json_schema(schema_json("chart", LIMITS), any_whitespace=False,
                                           separators=(",", ":"))
    prefix = b'{"errors":[{"category":"data","severity":2,"location":"bar","description":"x'
    good = _get_matcher_from_grammar(grammar)
    assert good.accept_string(prefix + "数é".encode() + b'"}],"counts":{"structure":0,"data":1,"text":0,"style":0}}')
    assert good.is_terminated()
    assert not _get_matcher_from_grammar(grammar).accept_string(prefix + bad)


def test_config_defaults_are_the_papers_and_mistakes_are_rejected():
    from pipeline.critic.config import RewardConfig

    cfg = RewardConfig()
    for task in ("chart", "svg"):
        s = cfg.sampling(task)
        assert (s.temperature, s.top_p, s.top_k, s.presence_penalty, s.max_new_tokens) == (0.7, 0.8, 20, 1.5, 4096)
    t = cfg.sampling("table")  # table_parse_rm_v2.py: greedy, repetition penalty 1.05, 8192 tokens
    assert (t.temperature, t.repetition_penalty, t.max_new_tokens) == (0.0, 1.05, 8192)
    assert cfg.max_image_side == 1024 and cfg.max_attempts is None
    assert (cfg.attempts("chart"), cfg.attempts("svg"), cfg.attempts("table")) == (2, 2, 1)
    f = cfg.formula
    assert [t.name for t in f.terms] == ["visual_erm_official", "render_success"]
    assert (f.official_max_severity, f.invalid_severity, f.table_failure_reward) == (50.0, 25.0, -4.0)
    assert (f.invalid_judgement, f.blank_rule) == ("official", "official")
    # A partial table section keeps the table defaults it does not name.
    partial = RewardConfig.model_validate({"tasks": {"table": {"answer_format": "released"}}})
    assert partial.sampling("table") == t and partial.attempts("table") == 1
    assert partial.answer_format("table").category_key == "type"
    with pytest.raises(ValidationError, match="prompt_file"):
        RewardConfig.model_validate({"tasks": {"chart": {"prompt_file": "/nonexistent/prompt.txt"}}})
    with pytest.raises(ValidationError, match="answer format file"):
        RewardConfig.model_validate({"tasks": {"chart": {"answer_format": "/nonexistent/format.yaml"}}})
    with pytest.raises(ValidationError, match="endpoints"):
        RewardConfig(backend="openai")
    with pytest.raises(ValidationError, match="extra"):
        RewardConfig.model_validate({"bakend": "hf"})
    with pytest.raises(ValidationError):
        RewardConfig.model_validate({"formula": {"terms": [{"name": "clip_score"}]}})


@pytest.mark.parametrize("task", sorted(CATEGORIES))
def test_default_limits_compile_and_bound_descriptions_exactly(task):
    """The default limits (400-character descriptions) once crashed xgrammar's compiler; the block spelling of
    long bounds must compile and still admit exactly 0..max characters."""
    import xgrammar as xgr
    from xgrammar.testing import _get_matcher_from_grammar

    from pipeline.critic.schema import schema_json

    limits = JudgementLimits()
    grammar = xgr.Grammar.from_json_schema(schema_json(task, limits), any_whitespace=False, separators=(",", ":"))
    cat = CATEGORIES[task][0]
    counts = ",".join(f'"{c}":{int(c == cat)}' for c in CATEGORIES[task])

    def answer(n_chars: int) -> bytes:
        return (f'{{"errors":[{{"category":"{cat}","severity":1,"location":"x","description":"{"é" * n_chars}"}}],'
                f'"counts":{{{counts}}}}}').encode()

    for n in (0, 99, 100, 250, limits.max_description_chars):
        matcher = _get_matcher_from_grammar(grammar)
        assert matcher.accept_string(answer(n)) and matcher.is_terminated(), n
    assert not _get_matcher_from_grammar(grammar).accept_string(answer(limits.max_description_chars + 1))


# --- the official parsing rule: answers the schema rejects, read as the official reward code reads them ------
RELEASED_CHART = {"structure_error_count": 0, "data_error_count": 1, "text_error_count": 0, "style_error_count": 0}


@pytest.mark.parametrize("text, severity, categories", [
    # omnirender_rm_v3.py: <think> dropped, a fence dropped, `errors` missing = no errors, items without a
    # numeric severity skipped, severities read with float(), negatives count 0, unknown keys ignored
    ('<think>compare bars</think>```json\n{"errors": [{"category": "data_error", "severity": 3}]}\n```', 3,
     ["data"]),
    ('{"verdict": "identical"}', 0, []),
    ('{"errors": [{"category": "text_error", "severity": "2"}, {"category": "style", "severity": 1.5},'
     ' "a string", {"category": "data_error"}, {"category": "data_error", "severity": "high"}]}', 3.5,
     ["text", "style"]),
    ('{"errors": [{"category": "colour", "severity": -2}, {"category": "data_error", "severity": 2}]}', 2,
     ["colour", "data"]),
    ('The answer: {"errors": [{"severity": 1}]} and {"errors": [{"severity": 3}]}', 1, [""]),  # first object
    ('{"errors": [{"category": "data_error", "severity": NaN}]}', 0, []),  # NaN parses; skipped, not summed
    ('[{"severity": 2}]', 0, []),  # a list is no object: its first {...} is read, and has no `errors`
])
def test_official_rule_reads_chart_answers_the_schema_rejects(text, severity, categories):
    strict = parse_judgement(text, "chart", LIMITS)
    assert not strict.valid
    j = parse_judgement(text, "chart", LIMITS, rule="official")
    assert j.valid and j.lenient and j.reason == strict.reason  # why the schema rejected it is kept
    assert j.severity == pytest.approx(severity)
    assert [e["category"] for e in j.errors] == categories
    assert sum(j.counts.values()) == sum(c in CATEGORIES["chart"] for c in categories)


@pytest.mark.parametrize("text", ["", "they match", '{"errors": 5}', '{"errors": {"severity": 2}}',
                                  '{"errors": [', '"errors"'])
def test_official_rule_still_rejects_what_the_official_chart_code_cannot_score(text):
    j = parse_judgement(text, "chart", LIMITS, rule="official")
    assert not j.valid and not j.lenient and j.reason


@pytest.mark.parametrize("text, severity", [
    # table_parse_rm_v2.py: a fence dropped, `errors` required, a missing severity counts 0, negative summed
    ('```json\n{"errors": [{"type": "numeric_error", "severity": 2}, {"type": "text_error"}]}\n```', 2),
    ('{"errors": []}', 0),
    ('{"layout_error_count": 1, "errors": [{"type": "layout_error", "severity": 3, "extra": 1}]}', 3),
    ('{"errors": [{"type": "text_error", "severity": -1}, {"type": "layout_error", "severity": 2}]}', 1),
    ('{"errors": {}}', 0),  # iterating an empty dict: nothing to sum
])
def test_official_rule_reads_table_answers_as_the_official_table_code(text, severity):
    j = parse_judgement(text, "table", LIMITS, rule="official")
    assert j.valid and j.lenient and j.severity == pytest.approx(severity)


@pytest.mark.parametrize("text", [
    '{}', '{"counts": {}}', '{"errors": 5}', '{"errors": [{"severity": "2"}]}',  # non-numeric severity: TypeError
    '{"errors": ["layout"]}', '{"errors": "none"}', '{"errors": {"a": 1}}', '[]',
    '{"errors": [{"severity": Infinity}]}',  # an infinite S would be an infinite reward: −4 here
])
def test_official_rule_fails_every_table_answer_the_official_table_code_fails(text):
    j = parse_judgement(text, "table", LIMITS, rule="official")
    assert not j.valid and not j.lenient


def test_official_rule_keeps_schema_valid_answers_as_they_are():
    ok = json.dumps(_doc("chart"))
    assert parse_judgement(ok, "chart", LIMITS, rule="official") == parse_judgement(ok, "chart", LIMITS)
    released = json.dumps({**RELEASED_CHART, "errors": [
        {"category": "data_error", "severity": 2, "location": "bar", "description": "short"}]})
    from pipeline.critic.config import RELEASED_FORMAT
    j = parse_judgement(released, "chart", LIMITS, fmt=RELEASED_FORMAT, rule="official")
    assert j.valid and not j.lenient and j.errors[0]["category"] == "data"
    with pytest.raises(ValueError, match="unknown parsing rule"):
        parse_judgement("{}", "chart", LIMITS, rule="loose")
