"""Table → HTML or Markdown."""

from __future__ import annotations

import re
from typing import Optional

from pipeline.tasks.base import Task, normalized_edit_similarity, outermost_element

_TABLE_OPEN = re.compile(r"<table\b", re.I)
_TABLE_CLOSE = re.compile(r"</table\s*>", re.I)
# Two or more consecutive lines that look like pipe-table rows, one of them a |---| delimiter row.
_MD_ROWS = re.compile(r"(?:^[ \t]*\|?.*\|.*(?:\n|$)){2,}", re.M)
_MD_DELIMITER = re.compile(r"^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(\|[ \t]*:?-{3,}:?[ \t]*)*\|?[ \t]*$", re.M)


class TableTask(Task):
    kind = "table"
    code_languages = ("html", "markdown", "md")

    def clean_code(self, code: str) -> str:
        # An HTML block may carry a page around the table; the table is the answer.
        return outermost_element(code, _TABLE_OPEN, _TABLE_CLOSE) or code

    def find_bare_code(self, text: str) -> Optional[str]:
        html = outermost_element(text, _TABLE_OPEN, _TABLE_CLOSE)
        if html:
            return html
        for rows in _MD_ROWS.finditer(text):
            if _MD_DELIMITER.search(rows.group(0)):
                return rows.group(0)
        return None

    def text_metrics(self, predicted_code: Optional[str], reference_code: str) -> dict[str, float]:
        from pipeline.metrics.table import table_to_html, teds  # heavy: pulls in the TEDS package

        if not predicted_code:
            return {"teds": 0.0, "teds_s": 0.0, "edit_similarity": 0.0}
        pred_html, ref_html = table_to_html(predicted_code), table_to_html(reference_code)
        return {
            "teds": teds(pred_html, ref_html),
            "teds_s": teds(pred_html, ref_html, structure_only=True),
            "edit_similarity": normalized_edit_similarity(predicted_code, reference_code),
        }


TASK = TableTask()
