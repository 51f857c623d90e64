"""Seeded generators: deterministic, varied, and their programs parse."""

import ast
import random
from collections import Counter

import pytest
from lxml import etree, html

from pipeline.data.charts import CHART_TYPES
from pipeline.data.generators import generate_program, item_rng
from pipeline.data.tables import generate_table_spec, table_to_markdown


@pytest.mark.parametrize("task", ["chart", "table", "svg"])
def test_same_seed_same_program_and_items_independent_of_n(task):
    a = generate_program(task, item_rng(7, task, 3))
    b = generate_program(task, item_rng(7, task, 3))
    c = generate_program(task, item_rng(7, task, 4))
    d = generate_program(task, item_rng(8, task, 3))
    assert a == b and a[0] != c[0] and a[0] != d[0]


def test_charts_parse_and_cover_every_type():
    seen = Counter()
    for i in range(150):
        code, meta = generate_program("chart", item_rng(0, "chart", i))
        ast.parse(code)
        assert "savefig" not in code and "show()" not in code  # the renderer owns output
        seen.update(meta["panels"])
        seen[meta["chart_type"]] += 0
    assert set(CHART_TYPES) <= set(seen)
    assert any(generate_program("chart", item_rng(0, "chart", i))[1]["chart_type"] == "subplots" for i in range(40))


def test_chart_programs_carry_the_features_edits_need():
    codes = [generate_program("chart", item_rng(1, "chart", i))[0] for i in range(80)]
    for feature in ("set_title", "legend(", "color=", "marker=", "annotate(", "set_xlabel", "cmap="):
        assert sum(feature in c for c in codes) >= 3, feature


def test_tables_html_parse_with_merges_and_markdown_without():
    formats, merged = Counter(), 0
    for i in range(120):
        code, meta = generate_program("table", item_rng(0, "table", i))
        formats[meta["format"]] += 1
        if meta["format"] == "html":
            table = html.fromstring(code)
            assert table.tag == "table" and table.findall(".//tr")
            merged += meta["merged_cells"]
            assert meta["merged_cells"] == bool(table.xpath(".//*[@colspan or @rowspan]"))
        else:
            assert "colspan" not in code and code.splitlines()[1].startswith("| :---")
    assert formats["html"] > 50 and formats["markdown"] > 15
    assert merged >= 15


def test_markdown_refuses_merged_cells():
    spec = next(s for i in range(100) if (s := generate_table_spec(random.Random(i))).has_merges)
    with pytest.raises(ValueError, match="merged"):
        table_to_markdown(spec)


def test_svgs_parse_and_use_the_advertised_features():
    feats = Counter()
    for i in range(100):
        code, meta = generate_program("svg", item_rng(0, "svg", i))
        root = etree.fromstring(code.encode())
        assert root.get("viewBox") == "0 0 256 256"
        tags = {etree.QName(e).localname for e in root.iter() if isinstance(e.tag, str)}
        feats.update(tags)
        feats["transform"] += any(e.get("transform") for e in root.iter() if isinstance(e.tag, str))
    for tag in ("rect", "circle", "ellipse", "line", "polyline", "polygon", "path", "g", "text", "linearGradient",
                "radialGradient", "transform"):
        assert feats[tag] >= 3, tag


def test_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task"):
        generate_program("video", random.Random(0))


def test_the_renderers_warmup_charts_are_the_generators_programs():
    """The chart zygote warms up on programs like the ones it will draw; render/ imports nothing from data/, so
    they are a file, kept in step here. Regenerate: json.dump([generate_chart(rng)[0] for 16 draws of
    random.Random(0)], open('pipeline/render/warmup_charts.json', 'w'), indent=0)."""
    import json

    from pipeline.data.charts import generate_chart
    from pipeline.render.chart_child import WARMUP_CHARTS_FILE, WARMUP_GENERATED_CHARTS

    stored = json.loads(WARMUP_CHARTS_FILE.read_text())
    rng = random.Random(0)
    assert stored == [generate_chart(rng)[0] for _ in range(WARMUP_GENERATED_CHARTS)]
