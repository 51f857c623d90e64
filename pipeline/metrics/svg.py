"""SVG structure score: how much of the reference's element tree an answer reproduces, from the markup alone.

    element_f1    multiset F1 of the drawn elements' tags (rect, circle, path, text, ...)
    attribute_f1  multiset F1 of (tag, attribute, value) triples, numbers rounded to whole units and colours
                  lower-cased, so that 10 vs 10.0 or RED vs red are the same value
    structure     their mean: the held-out SVG metric of the ablation (docs/results.md)

It is not the oracle critic's reward (that one aligns shapes and weighs each difference by severity,
`pipeline/critic/structural/svg.py`), so no arm of the ablation optimises it directly. An answer that does not
parse as SVG scores 0; the XML parser resolves no entities and loads no DTD.
"""

from __future__ import annotations

import re
from collections import Counter

from lxml import etree

# Presentation-free attributes that say nothing about what is drawn.
_IGNORED = {"xmlns", "version", "id", "class", "{http://www.w3.org/XML/1998/namespace}space"}
_NUMBER = re.compile(r"^-?\d+(\.\d+)?(px)?$")


def _elements(code: str | None) -> list[etree._Element] | None:
    if not code or not code.strip():
        return None
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                             remove_comments=True, remove_pis=True)
    try:
        root = etree.fromstring(code.strip().encode("utf-8"), parser)
    except (etree.XMLSyntaxError, ValueError):
        return None
    if not isinstance(root.tag, str) or etree.QName(root).localname != "svg":
        return None
    return [el for el in root.iter() if isinstance(el.tag, str) and el is not root]


def _value(value: str) -> str:
    value = " ".join(value.split()).lower()
    if _NUMBER.match(value):
        return str(round(float(value.removesuffix("px"))))
    return value


def _f1(predicted: Counter, reference: Counter) -> float:
    if not predicted and not reference:
        return 1.0
    overlap = sum((predicted & reference).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(predicted.values()), overlap / sum(reference.values())
    return 2 * precision * recall / (precision + recall)


def svg_structure(predicted: str | None, reference: str | None) -> dict[str, float]:
    """{element_f1, attribute_f1, structure} of `predicted` against `reference` (both SVG markup); all 0 when
    either does not parse."""
    pred, ref = _elements(predicted), _elements(reference)
    if pred is None or ref is None:
        return {"element_f1": 0.0, "attribute_f1": 0.0, "structure": 0.0}

    def tags(els):
        return Counter(etree.QName(el).localname for el in els)

    def attributes(els):
        return Counter((etree.QName(el).localname, etree.QName(k).localname, _value(v))
                       for el in els for k, v in el.attrib.items() if k not in _IGNORED)

    element_f1, attribute_f1 = _f1(tags(pred), tags(ref)), _f1(attributes(pred), attributes(ref))
    return {"element_f1": element_f1, "attribute_f1": attribute_f1, "structure": (element_f1 + attribute_f1) / 2}
