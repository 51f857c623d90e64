"""Whether wandb can log online here: an API key in the environment or a wandb entry in ~/.netrc."""

from __future__ import annotations

import os
from pathlib import Path


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
