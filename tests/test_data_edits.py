"""Targeted edits: taxonomy, AST/DOM transforms on hand-made programs, severity rules."""

import ast
import random

import pytest
from lxml import etree, html

from pipeline.data.edits import EDITS, EditNotApplicable, propose_edit, visual_erm_answer
from pipeline.data.edits import table as table_edits
from pipeline.data.edits.base import EditLabel, scale_severity, typo
from pipeline.data.generators import generate_program, item_rng
from pipeline.sample import CATEGORIES


def by_name(task, name):
    return next(e for e in EDITS[task] if e.name == name)


def test_taxonomy_uses_only_the_papers_categories_and_covers_each():
    for task, edits in EDITS.items():
        cats = {e.category for e in edits}
        assert cats == set(CATEGORIES[task]), task
        assert all(e.severity_rule for e in edits)


def test_severity_scale_boundaries():
    assert [scale_severity(x) for x in (0.1, 0.15, 0.2, 0.5, 0.51, -0.7)] == [1, 1, 2, 2, 3, 3]


def test_typo_always_changes_text():
    rng = random.Random(0)
    assert all(typo(rng, w) != w for w in ["Revenue", "ab", "Q1", "aa"] for _ in range(20))
    with pytest.raises(EditNotApplicable):
        typo(rng, "123")


CHART = """import matplotlib.pyplot as plt
fig, ax = plt.subplots()
categories = ['A', 'B', 'C']
values = [10, 20, 40]
ax.bar(categories, values, color='#1f77b4', width=0.6, label='Sales')
ax.set_title('Revenue')
ax.legend(loc='upper left')
"""


def test_chart_data_value_changes_one_number_with_rule_severity():
    for seed in range(20):
        new, label = by_name("chart", "data_value").apply(CHART, random.Random(seed))
        tree = ast.parse(new)
        values = next(n.value for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "values")
        got = [e.value for e in values.elts]
        changed = [(o, n) for o, n in zip([10, 20, 40], got) if o != n]
        assert len(changed) == 1 and label.category == "data"
        old, now = changed[0]
        assert label.severity == scale_severity((now - old) / old)
        assert str(now) in label.description and str(old) in label.description


def test_chart_drop_point_keeps_lists_parallel():
    new, label = by_name("chart", "data_drop_point").apply(CHART, random.Random(1))
    tree = ast.parse(new)
    lists = {n.targets[0].id: len(n.value.elts) for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
             and isinstance(n.value, ast.List)}
    assert lists == {"categories": 2, "values": 2}
    assert label.severity == 3 and label.category == "data"


def test_chart_remove_and_structure_edits():
    new, label = by_name("chart", "remove_legend").apply(CHART, random.Random(0))
    assert "legend" not in new and (label.category, label.severity) == ("structure", 2)
    new, label = by_name("chart", "bar_orientation").apply(CHART, random.Random(0))
    assert "ax.barh(categories, values" in new and "height=0.6" in new and label.severity == 3
    with pytest.raises(EditNotApplicable):
        by_name("chart", "colormap").apply(CHART, random.Random(0))
    with pytest.raises(EditNotApplicable, match="does not parse"):
        by_name("chart", "remove_title").apply("plt.plot(", random.Random(0))


TABLE = ('<table><thead><tr><th rowspan="2">Region</th><th colspan="2">2024</th></tr>'
         '<tr><th>Sales</th><th>Growth</th></tr></thead><tbody>'
         '<tr><td rowspan="2">North</td><td>120 kg</td><td>+3.5%</td></tr>'
         '<tr><td>80 kg</td><td>-1.0%</td></tr>'
         '<tr><td>South</td><td>95 kg</td><td>+0.5%</td></tr></tbody></table>')


def grid_of(code):
    g = table_edits.build_grid(table_edits._parse(code))
    return g, {(r, c) for r in range(len(g.rows)) for c in range(g.n_cols)} - set(g.slots)


def test_table_grid_honours_spans():
    g, holes = grid_of(TABLE)
    assert g.n_cols == 3 and g.n_header_rows == 2 and not holes
    assert g.column_name(1) == "column 'Sales'" and g.row_name(3) == "row '80 kg'"  # under the North label
    assert g.where(g.slots[(2, 2)]) == "row '120 kg', column 'Growth'"
    g.slots[(4, 0)].text = ""
    assert g.row_name(4) == "body row 3"
    assert g.slots[(3, 0)].text == "North"


@pytest.mark.parametrize("name", [e.name for e in EDITS["table"]])
def test_every_table_edit_keeps_the_grid_rectangular(name):
    for seed in range(8):
        try:
            new, label = by_name("table", name).apply(TABLE, random.Random(seed))
        except EditNotApplicable:
            continue
        _, holes = grid_of(new)
        assert not holes, (name, new)
        assert new != TABLE and label.category in CATEGORIES["table"]


def test_table_delete_row_under_a_row_span():
    from pipeline.data.edits.table import _parse, build_grid, delete_row

    table = _parse(TABLE)
    g = build_grid(table)
    rng = random.Random(0)
    rng.choice = lambda seq: 2  # the row that starts the 'North' span
    label = delete_row(g, rng)
    out = html.tostring(table, encoding="unicode")
    assert 'rowspan' not in out.split("<tbody>")[1] and "<td>North</td><td>80 kg</td>" in out
    assert (label.category, label.severity) == ("layout", 3)


def test_table_numeric_edits_on_known_cells():
    new, label = by_name("table", "unit_change").apply(TABLE, random.Random(0))
    assert label.category == "numeric" and ("g<" in new or "‰" in new)
    new, label = by_name("table", "decimal_shift").apply(TABLE, random.Random(0))
    assert label.severity == 3 and any(x in new for x in ("+35.%", "+0.35%", "-10.%", "-0.10%", "+5.%", "+0.05%",
                                                          "+0.5%", "-0.1%", "+3.5%"))
    with pytest.raises(EditNotApplicable, match="Markdown"):
        by_name("table", "delete_row").apply("| a |\n|---|\n| 1 |", random.Random(0))


SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100" viewBox="0 0 100 100">'
       '<rect width="100%" height="100%" fill="#f5f5f5"/>'
       '<circle cx="20" cy="20" r="10" fill="#d62728"/>'
       '<path d="M 50 50 A 20 20 0 0 1 90 50 L 70 80 Z" fill="#1f77b4"/>'
       '<text x="50" y="95" font-size="10">Hi</text></svg>')


def test_svg_describes_elements_by_colour_and_place():
    new, label = by_name("svg", "remove_element").apply(SVG, random.Random(1))
    root = etree.fromstring(new.encode())
    assert len(list(root)) == 3
    assert label.location in ("red circle (upper left)", "blue path (centre)")


def test_svg_outline_point_keeps_arc_flags_valid():
    for seed in range(10):
        new, _ = by_name("svg", "outline_point").apply(SVG, random.Random(seed))
        d = etree.fromstring(new.encode()).find("{http://www.w3.org/2000/svg}path").get("d").split()
        a = d.index("A")
        assert d[a + 1:a + 6] == ["20", "20", "0", "0", "1"]


def test_svg_move_severity_by_distance():
    for seed in range(10):
        new, label = by_name("svg", "move").apply(SVG, random.Random(seed))
        pct = int(label.description.split("about ")[1].split(" %")[0])
        assert label.severity == (1 if pct <= 4 else 2 if pct <= 12 else 3)
        assert "translate(" in new


@pytest.mark.parametrize("task", ["chart", "table", "svg"])
def test_propose_edit_on_generated_programs(task):
    for i in range(25):
        code, _ = generate_program(task, item_rng(3, task, i), "html")
        new, label = propose_edit(task, code, random.Random(i))
        assert new != code and label.category in CATEGORIES[task] and label.severity in (1, 2, 3)
        assert label.location and label.description


def test_visual_erm_answer_format():
    labels = [EditLabel("data", 3, "bar 2", "too high", "data_value"), EditLabel("style", 1, "bars", "red", "c")]
    ans = visual_erm_answer("chart", labels)
    assert ans["data_error_count"] == 1 and ans["structure_error_count"] == 0
    assert ans["errors"][0] == {"category": "data_error", "severity": 3, "location": "bar 2", "description": "too high"}
    tab = visual_erm_answer("table", [EditLabel("numeric", 2, "row 'A', column 'B'", "wrong", "digit_change")])
    assert tab["errors"][0]["type"] == "numeric_error" and "location" not in tab["errors"][0]
