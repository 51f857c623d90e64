"""The vLLM API our GPU path touches (benchmarks/vllm_api_check.py).

Where vLLM is importable (a CPU venv with the pinned release is enough) every class, method, parameter and
attribute on the list is checked with `inspect`. Everywhere the list itself is checked against our code: every
name our code imports from vLLM and every worker method it calls through `collective_rpc` must be on it, and the
`gpu` extra must pin the range the list was checked for.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest
import tomllib

from benchmarks import vllm_api_check as check

REPO_ROOT = Path(__file__).resolve().parent.parent
VLLM_CODE = [REPO_ROOT / p for p in ("pipeline/rollout/vllm.py", "pipeline/rollout/vllm_worker.py",
                                     "pipeline/rollout/weight_sync.py", "pipeline/critic/backends/vllm.py")]


def _vllm_import_error() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (a GPU-only optional extra: pip install .[gpu])"
    try:
        import vllm  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a build that does not match this torch / CUDA
        return f"import vllm failed: {type(e).__name__}: {e}"
    return None


VLLM_ERROR = _vllm_import_error()


@pytest.mark.skipif(VLLM_ERROR is not None, reason=f"{VLLM_ERROR}: the signature check needs vLLM importable")
def test_every_vllm_api_we_touch_exists_with_our_parameters():
    import vllm
    from packaging.requirements import Requirement

    assert Requirement(check.VLLM_REQUIREMENT).specifier.contains(vllm.__version__, prereleases=True), \
        f"vLLM {vllm.__version__} is outside the range the code is written for ({check.VLLM_REQUIREMENT})"
    count, problems = check.run()
    assert count >= 50
    assert problems == []


def _vllm_imports(path: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vllm":
            found.setdefault(node.module, set()).update(a.name for a in node.names)
    return found


def test_the_list_names_every_vllm_import_of_our_code():
    imported: dict[str, set[str]] = {}
    for path in VLLM_CODE:
        for module, names in _vllm_imports(path).items():
            imported.setdefault(module, set()).update(names)
    assert imported  # the scan found the code
    missing = {m: sorted(n - check.IMPORTED.get(m, set())) for m, n in imported.items()
               if n - check.IMPORTED.get(m, set())}
    assert not missing, f"add these to benchmarks/vllm_api_check.py IMPORTED (and check their use): {missing}"


def test_the_list_names_every_worker_method_we_call():
    """Methods called by name through collective_rpc are either our worker extension's or vLLM's worker's."""
    from pipeline.rollout.vllm_worker import RolloutWorkerExtension

    source = (REPO_ROOT / "pipeline/rollout/vllm.py").read_text()
    called = set(re.findall(r'_rpc\(\s*"([a-z_]+)"', source))
    assert {"update_weights", "load_state_dict_items"} <= called
    ours = {n for n in vars(RolloutWorkerExtension) if not n.startswith("_")}
    checked = {item.path.rsplit(".", 1)[1] for item in check.TOUCHED
               if item.path.startswith("vllm.v1.worker.gpu_worker:Worker.")}
    assert called - ours <= checked, sorted(called - ours - checked)


def test_the_gpu_extra_pins_the_checked_range():
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    vllm_pins = [r for r in extras["gpu"] if r.startswith("vllm")]
    assert vllm_pins == [check.VLLM_REQUIREMENT]


def test_the_checks_themselves_can_fail():
    """Against a module that is always there: a wrong keyword, a missing attribute, a wrong Literal value."""
    assert check.Params("json:dumps", ("indent",)).check() == []
    assert check.Params("json:dumps", ("no_such_keyword",)).check()
    assert check.Exists("json:no_such_function").check()
    assert check.Fields("inspect:Parameter", ("name", "kind")).check() == []
    assert check.Fields("inspect:Parameter", ("no_such_field",)).check()
    assert check.LiteralValue("typing:Literal", "x").check()  # not a Literal alias
    assert check.Source("json:dumps", "no such text", "why").check()
