"""Task kinds: chart (matplotlib), table (HTML/Markdown), svg — one module each, same `Task` interface."""

from __future__ import annotations

from pipeline.tasks.base import Extraction, Task, fenced_blocks
from pipeline.tasks.chart import TASK as CHART
from pipeline.tasks.svg import TASK as SVG
from pipeline.tasks.table import TASK as TABLE

TASKS: dict[str, Task] = {"chart": CHART, "table": TABLE, "svg": SVG}


def get_task(kind: str) -> Task:
    try:
        return TASKS[kind]
    except KeyError:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {sorted(TASKS)}") from None


# The fence language each kind's answer uses in the compact programs a tiny policy learns (one of the task's
# `code_languages`).
FENCE_LANGUAGE = {"chart": "python", "table": "markdown", "svg": "svg"}


def fenced_response(kind: str, code: str) -> str:
    """The answer format every task prompt asks for: the code in one fenced block."""
    return f"```{FENCE_LANGUAGE[kind]}\n{code}\n```"


__all__ = ["Extraction", "FENCE_LANGUAGE", "Task", "TASKS", "fenced_blocks", "fenced_response", "get_task"]
