"""The structural teacher: no errors for equivalent programs, the edit engine's labels recovered on targeted
edits (same category, and a full word-overlap match for the evaluation's matcher), valid answer texts, the
expected categories on hand-written wrong programs, and the parse-failure rules. No rendering: fast."""

from __future__ import annotations

import ast
import random
import re
import time

import pytest
from lxml import etree

from pipeline.critic.schema import judgement_model
from pipeline.critic.structural import StructuralDiffError, StructuralTeacher, structural_diff
from pipeline.data.compact import compact_program
from pipeline.data.edits import EditNotApplicable, propose_edit
from pipeline.data.generators import generate_program, item_rng
from pipeline.data.tables import generate_table_spec, table_to_html, table_to_markdown
from pipeline.metrics.critic import evaluate_predictions
from pipeline.sample import CATEGORIES, JudgementLimits

TASKS = ("chart", "table", "svg")
PAIRS_PER_TASK = 40


def _edit_pairs(task: str) -> list[tuple[str, str, dict]]:
    """(reference, edited, label) for the first PAIRS_PER_TASK programs an edit applies to (Markdown tables
    are never edited, so tables draw a few more programs)."""
    pairs = []
    for i in range(5 * PAIRS_PER_TASK):
        rng = item_rng(0, "structural-test/" + task, i)
        code, _ = generate_program(task, rng)
        try:
            edited, label = propose_edit(task, code, rng)
        except EditNotApplicable:
            continue
        lab = label.to_dict()
        lab.pop("edit")
        pairs.append((code, edited, lab))
        if len(pairs) == PAIRS_PER_TASK:
            break
    return pairs


def _assert_valid(task: str, errors: list[dict]) -> None:
    limits = JudgementLimits()
    for e in errors:
        assert set(e) == {"category", "severity", "location", "description"}, e
        assert e["category"] in CATEGORIES[task], e
        assert e["severity"] in (1, 2, 3) and isinstance(e["severity"], int), e
        for key, limit in (("location", limits.max_location_chars), ("description", limits.max_description_chars)):
            assert isinstance(e[key], str) and len(e[key]) <= limit, e
            assert '"' not in e[key] and "\\" not in e[key], e
            assert e[key].isprintable(), e
    # and the critic's own answer model accepts them
    counts = {c: sum(e["category"] == c for e in errors) for c in CATEGORIES[task]}
    judgement_model(task, limits).model_validate({"errors": errors, "counts": counts})


# ------------------------------------------------------------------------------------------ equivalence
@pytest.mark.parametrize("task", TASKS)
def test_identical_programs_have_no_errors(task):
    for i in range(15):
        code, _ = generate_program(task, item_rng(0, f"structural-same/{task}", i))
        assert structural_diff(task, code, code) == []
        compact = compact_program(task, i)
        assert structural_diff(task, compact, compact) == []


def test_harmless_chart_changes_are_not_errors():
    for i in range(15):
        code, _ = generate_program("chart", item_rng(0, "structural-harmless/chart", i))
        reformatted = ast.unparse(ast.parse(code))  # quotes, spacing, blank lines
        resized = re.sub(r"figsize=\([^)]*\)", "figsize=(9, 3), dpi=200", code)
        renamed = code.replace("values", "heights").replace("categories", "cats")
        for variant in (reformatted, resized, renamed):
            assert structural_diff("chart", code, variant) == [], variant
    compact = "import matplotlib.pyplot as plt\nplt.bar(['A','B','C'],[3,5,7],color='red')\nplt.title('Sales')"
    rewritten = ("import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(4, 3))\n"
                 "ax.bar(x=['A', 'B', 'C'], height=[3, 5, 7], color='#ff0000')\nax.set_title(\"Sales\")\n")
    assert structural_diff("chart", compact, rewritten) == []


def test_harmless_table_changes_are_not_errors():
    for i in range(15):
        rng = random.Random(i)
        spec = generate_table_spec(rng, allow_merges=False)
        spec.caption = ""  # Markdown has no captions
        html = table_to_html(spec, rng)
        markdown = table_to_markdown(spec)
        squashed = re.sub(r">\s+<", "><", html)
        spaced = html.replace("<td>", "<td>\n   ").replace("</td>", "  \n</td>")
        for a, b in ((html, markdown), (markdown, html), (html, squashed), (html, spaced)):
            assert structural_diff("table", a, b) == [], (a, b)


def test_harmless_svg_changes_are_not_errors():
    for i in range(15):
        code, _ = generate_program("svg", item_rng(0, "structural-harmless/svg", i))
        root = etree.fromstring(code.encode())
        for el in root.iter():  # attributes in reverse order, hex colours in upper case, no indentation
            items = list(el.attrib.items())[::-1]
            el.attrib.clear()
            for k, v in items:
                el.set(k, v.upper() if v.startswith("#") else v)
        assert structural_diff("svg", code, etree.tostring(root, encoding="unicode")) == []
    ref = ('<svg viewBox="0 0 64 64"><rect x="2" y="4" width="20" height="10" fill="red"/>'
           '<circle cx="40" cy="30" r="8" fill="blue" stroke="black" stroke-width="2"/></svg>')
    # the same picture on a viewBox twice as large, colours spelled differently, style attribute
    scaled = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 128 128">\n'
              '  <rect style="fill: #ff0000" height="20" width="40" y="8" x="4"/>\n'
              '  <circle r="16" cy="60" cx="80" fill="#00f" stroke="#000" stroke-width="4"/>\n</svg>')
    assert structural_diff("svg", ref, scaled) == []


# ------------------------------------------------------------------------------------------ edit pairs
@pytest.mark.parametrize("task", TASKS)
def test_edit_pairs_recover_the_edit_label(task):
    pairs = _edit_pairs(task)
    assert len(pairs) == PAIRS_PER_TASK
    items, agree = [], 0
    for k, (code, edited, label) in enumerate(pairs):
        predicted = structural_diff(task, code, edited)
        _assert_valid(task, predicted)
        agree += any(p["category"] == label["category"] for p in predicted)
        items.append((f"{task}/{k}", task, predicted, [label]))
    summary, _ = evaluate_predictions(items)
    agreement = agree / len(pairs)
    f1_hard = summary[task]["f1_hard"]
    print(f"\nstructural teacher on {len(pairs)} {task} edit pairs: category agreement {agreement:.3f}, "
          f"F1 hard {f1_hard:.3f}, F1 soft {summary[task]['f1_soft']:.3f}, "
          f"{summary[task]['n_predicted']} predicted for {summary[task]['n_annotated']} annotated")
    # Measured: 1.0 and 1.0 on these 40 per task; on 1000 pairs per task F1 hard is ≥ 0.996 (the misses are
    # edits whose label does not describe the edited program, e.g. a renamed dict key colliding with another).
    assert agreement >= 0.95
    assert f1_hard >= 0.9


# ------------------------------------------------------------------------------------------ validity
@pytest.mark.parametrize("task", TASKS)
def test_labels_are_valid_answers_for_noisy_candidates(task):
    rng = random.Random(7)
    for i in range(30):
        ref = compact_program(task, i) if i % 2 else generate_program(task, item_rng(0, f"noisy/{task}", i))[0]
        cand = compact_program(task, i + 100)  # another program altogether
        lines = ref.split("\n")
        if len(lines) > 2:
            del lines[rng.randrange(1, len(lines))]
        for candidate in (cand, "\n".join(lines), ref.replace("1", "7")):
            _assert_valid(task, structural_diff(task, ref, candidate))


def test_max_errors_keeps_the_most_severe():
    ref = "| A | B |\n|---|---|\n" + "".join(f"| r{k} | {k + 10} |\n" for k in range(30))
    cand = "| A | B |\n|---|---|\n" + "".join(f"| r{k} | {k + 11 if k % 2 else 5 * k + 100} |\n" for k in range(30))
    every = structural_diff("table", ref, cand, max_errors=100)
    capped = structural_diff("table", ref, cand, max_errors=5)
    assert len(every) == 30 and len(capped) == 5
    assert sorted(e["severity"] for e in capped) == sorted(e["severity"] for e in every)[-5:]


# ------------------------------------------------------------------------------------ hand-written cases
def _kinds(errors: list[dict]) -> list[tuple[str, int]]:
    return sorted((e["category"], e["severity"]) for e in errors)


def test_chart_missing_bar_and_misspelled_title():
    ref = "import matplotlib.pyplot as plt\nplt.bar(['A','B','C'],[3,5,7],color='red')\nplt.title('Sales')"
    cand = "import matplotlib.pyplot as plt\nplt.bar(['A','B'],[3,5],color='red')\nplt.title('Slaes')"
    errors = structural_diff("chart", ref, cand)
    assert _kinds(errors) == [("data", 3), ("text", 1)], errors
    assert "'C'" in next(e for e in errors if e["category"] == "data")["location"]


def test_chart_wrong_type_colour_and_value():
    ref = "import matplotlib.pyplot as plt\nplt.bar(['Q1','Q2','Q3'],[10,20,30],color='blue')"
    cand = "import matplotlib.pyplot as plt\nplt.barh(['Q1','Q2','Q3'],[10,20,90],color='green')\nplt.legend()"
    errors = structural_diff("chart", ref, cand)
    assert _kinds(errors) == [("data", 3), ("structure", 1), ("structure", 3), ("style", 2)], errors


def test_chart_series_expanded_from_loops():
    ref = ("import matplotlib.pyplot as plt\nimport numpy as np\nfig, ax = plt.subplots()\n"
           "data = {'Revenue': [1, 2, 3], 'Costs': [4, 5, 6]}\nx = np.arange(3)\n"
           "for i, (name, vals) in enumerate(data.items()):\n"
           "    ax.bar(x + i * 0.4, vals, 0.4, label=name)\nax.legend()\n")
    cand = ref.replace("'Costs': [4, 5, 6]", "'Costs': [4, 9, 6]")
    errors = structural_diff("chart", ref, cand)
    assert errors == [{"category": "data", "severity": 3, "location": "data point 2 of 'data' (Costs)",
                       "description": "The value plotted for point 2 is 9 instead of 5."}]
    one_series = ref.replace(", 'Costs': [4, 5, 6]", "")
    assert _kinds(structural_diff("chart", ref, one_series)) == [("structure", 3)]


def test_table_missing_row_is_one_error_and_cells_are_compared():
    ref = "| Item | Year | Cost |\n|---|---|---|\n| Tea | 12 | 3.5 |\n| Oslo | 40 | 7.0 |\n| Rome | 55 | 1.25 |"
    cand = "| Item | Year | Cost |\n|---|---|---|\n| Tea | 12 | 35 |\n| Rome | 55 | 1.25 |"
    errors = structural_diff("table", ref, cand)
    assert _kinds(errors) == [("layout", 3), ("numeric", 3)], errors
    assert {e["location"] for e in errors} == {"row 'Oslo'", "row 'Tea', column 'Cost'"}
    typo = ref.replace("Rome", "Rmoe").replace("| Year |", "| Yaer |")
    assert _kinds(structural_diff("table", ref, typo)) == [("text", 1), ("text", 1)]


def test_svg_missing_shape_recoloured_and_moved():
    ref = ('<svg viewBox="0 0 64 64"><rect x="4" y="4" width="20" height="20" fill="red"/>'
           '<circle cx="44" cy="44" r="8" fill="blue"/><text x="8" y="60">Hi</text></svg>')
    cand = ('<svg viewBox="0 0 64 64"><rect x="14" y="4" width="20" height="20" fill="green"/>'
            '<text x="8" y="60">Ho</text></svg>')
    errors = structural_diff("svg", ref, cand)
    assert _kinds(errors) == [("shape", 3), ("structure", 3), ("style", 2), ("text_symbol", 2)], errors


# --------------------------------------------------------------------------------------- parse rules
@pytest.mark.parametrize("task,bad,reason", [
    ("chart", "import matplotlib.pyplot as plt\nplt.bar([1, 2], [3, 4]", "syntax error"),
    ("table", "just some words, no table here", "no HTML table"),
    ("svg", "<svg viewBox='0 0 8 8'><rect></svg>", "does not parse"),
    ("svg", '<!DOCTYPE svg [<!ENTITY a "x">]><svg><text>&a;</text></svg>', "DOCTYPE"),
    ("svg", "<html><body/></html>", "not svg"),
])
def test_unparseable_reference_raises(task, bad, reason):
    with pytest.raises(StructuralDiffError, match=reason):
        structural_diff(task, bad, compact_program(task, 0))
    with pytest.raises(StructuralDiffError, match="empty"):
        structural_diff(task, "   ", compact_program(task, 0))


@pytest.mark.parametrize("task,bad", [
    ("chart", "import matplotlib.pyplot as plt\nplt.bar([1, 2], [3, 4]"),
    ("table", "no table"),
    ("svg", "<svg viewBox='0 0 8 8'><rect>"),
    ("svg", '<!DOCTYPE svg [<!ENTITY a "x">]><svg><text>&a;</text></svg>'),
    ("chart", ""),
])
def test_unparseable_candidate_is_one_severe_error(task, bad):
    errors = structural_diff(task, compact_program(task, 0), bad)
    assert len(errors) == 1
    assert errors[0]["severity"] == 3
    assert errors[0]["category"] == {"chart": "structure", "table": "layout", "svg": "structure"}[task]
    _assert_valid(task, errors)


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task"):
        structural_diff("video", "x", "y")


# ------------------------------------------------------------------------------------ never executed
def test_candidate_code_is_never_executed(tmp_path):
    marker = tmp_path / "ran"
    ref = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])"
    evil = (f"import os\nopen({str(marker)!r}, 'w').write('x')\nos.system('touch {marker}')\n"
            "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])")
    assert structural_diff("chart", ref, evil) == []
    assert not marker.exists()


def test_runaway_candidates_are_bounded():
    ref = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])"
    for cand in ("import matplotlib.pyplot as plt\nfor i in range(10**12):\n    plt.plot([i, i])",
                 "import matplotlib.pyplot as plt\nwhile True:\n    x = [0] * 10**9\nplt.plot([1, 2, 3])",
                 "import matplotlib.pyplot as plt\nx = 10 ** 10 ** 10\ns = 'a' * 10 ** 12\nplt.plot([1, 2, 3])",
                 "import matplotlib.pyplot as plt\nplt.plot(" + "[" * 300 + "]" * 300 + ")"):
        start = time.perf_counter()
        errors = structural_diff("chart", ref, cand)
        assert time.perf_counter() - start < 3
        _assert_valid("chart", errors)


def test_teacher_interface():
    teacher = StructuralTeacher(max_errors=2)
    assert teacher.name == "structural"
    ref, cand = compact_program("svg", 3), compact_program("svg", 4)
    assert teacher.label("svg", ref, cand) == structural_diff("svg", ref, cand, max_errors=2)
