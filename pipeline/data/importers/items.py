"""What a source format yields: an item to import, or a row it could not read (with the reason)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class SourceItem:
    """One reference from a source layout. `image` None = the layout has code only (it gets rendered)."""

    id: str  # stable within the source: a file stem, a line number, an annotation id
    where: str  # for a person: file (and line) it came from
    task: Optional[str]
    code: Optional[str]
    image: Optional[np.ndarray] = None
    meta: dict = field(default_factory=dict)


@dataclass
class Unreadable:
    """A row the format could not turn into an item; listed in failures.jsonl, never silently skipped."""

    id: str
    where: str
    reason: str
    detail: str = ""
