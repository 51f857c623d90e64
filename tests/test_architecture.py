"""The house rules of docs/architecture.md, read off the code's own imports (with `ast`, nothing imported).

Every import statement counts, at module level or inside a function, `if TYPE_CHECKING:` included: a hidden
edge is still an edge. `import a.b.c` and `from a.b import c` are edges to the module a.b.c (or to the package
a.b when c is a name in it). The checks run on a directory, so a test can plant a violation in a copy and see
the checker report it.
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Bottom → top. A module belongs to the longest prefix that names it; it may import its own layer and
# those below, never one above. (docs/architecture.md draws the same floors.)
LAYERS: list[tuple[str, ...]] = [
    # the ground: config building blocks, the Sample record and its vocabulary, run logging's leaves
    ("pipeline", "pipeline.schema", "pipeline.sample", "pipeline.cache", "pipeline.console", "pipeline.shutdown", "pipeline.distributed",
     "pipeline.runlog.config", "pipeline.runlog.layout", "pipeline.runlog.wandb_env"),
    ("pipeline.render",),
    ("pipeline.metrics",),
    ("pipeline.tasks",),
    ("pipeline.data",),
    ("pipeline.models",),
    ("pipeline.critic", "pipeline.rewards", "pipeline.rollout", "pipeline.revision"),
    ("pipeline.training",),
    ("pipeline.critic.training", "pipeline.tiny"),
    ("pipeline.loop", "pipeline.runlog", "pipeline.placement", "pipeline.config"),
    ("pipeline.evaluate",),
    ("actors",),
    ("pipeline.main",),  # the driver: the one place that wires actors together
    ("pipeline.experiments",),  # runs the driver once per arm and seed
]
# The command-line entry points sit above everything (they wire the house together, Ray included).
# pipeline.report and pipeline.wandb_offline: the `python -m` names users know, kept as thin shims of runlog/.
ENTRY_POINTS = ("pipeline.main", "*.__main__", "*.cli", "*_cli", "pipeline.report", "pipeline.wandb_offline")
RAY_ALLOWED = ENTRY_POINTS
# A function-local import is for a heavy optional dependency (or a module only some paths need, which keeps
# a light process light), and says so in a comment on its line or heading its group of import lines.
HEAVY_OPTIONAL = {"torch", "vllm", "deepspeed", "playwright", "transformers", "verl", "ray", "wandb", "xgrammar",
                  "cairosvg", "matplotlib", "skimage", "table_recognition_metric", "openai", "httpx"}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str  # an internal module, or the top-level name of an external one
    line: int
    local: bool  # inside a function
    commented: bool  # a comment on its line or the line above


@dataclass
class Graph:
    modules: dict[str, Path]
    edges: list[Edge] = field(default_factory=list)
    external: list[Edge] = field(default_factory=list)

    def internal_pairs(self) -> set[tuple[str, str]]:
        return {(e.source, e.target) for e in self.edges}


def module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_graph(root: Path, packages: tuple[str, ...] = ("pipeline", "actors")) -> Graph:
    modules = {module_name(p.relative_to(root)): p for top in packages for p in sorted((root / top).rglob("*.py"))}
    graph = Graph(modules)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for mod, path in modules.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the package this module is in
                    base = mod.split(".") if is_package else mod.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                names = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
            else:
                continue
            commented = "#" in lines[node.lineno - 1] or _comment_above(lines, node.lineno)
            for name in names:
                if name.split(".")[0] in packages:
                    target = resolve(name)
                    if target and target != mod:
                        graph.edges.append(Edge(mod, target, node.lineno, id(node) in local, commented))
                else:
                    graph.external.append(Edge(mod, name.split(".")[0], node.lineno, id(node) in local,
                                               commented))
    return graph


def _comment_above(lines: list[str], lineno: int) -> bool:
    """A comment heads the group of import lines this one belongs to."""
    j = lineno - 2
    while j >= 0 and lines[j].strip().startswith(("import ", "from ")):
        j -= 1
    return j >= 0 and lines[j].strip().startswith("#")


def is_entry_point(mod: str) -> bool:
    return any(fnmatch(mod, pattern) for pattern in ENTRY_POINTS)


def layer_of(mod: str) -> int:
    if is_entry_point(mod) and mod != "pipeline.main":
        return len(LAYERS)
    best, best_len = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or (mod.startswith(p + ".") and p != "pipeline")) and len(p) > best_len:
                best, best_len = i, len(p)
    if best is None:
        raise AssertionError(f"{mod} is on no floor: add it to LAYERS (and docs/architecture.md)")
    return best


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    succ: dict[str, set[str]] = {m: set() for m in graph.modules}
    for s, t in graph.internal_pairs():
        succ[s].add(t)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph.modules:
        if root in index:
            continue
        work = [(root, iter(sorted(succ[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(succ[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def upward_edges(graph: Graph) -> list[Edge]:
    return [e for e in graph.edges if layer_of(e.target) > layer_of(e.source)]


def rule_violations(graph: Graph) -> list[str]:
    """Every broken rule, one line each: `module:line: what`."""
    out = []
    for e in graph.external:
        if e.target == "ray" and e.source.startswith("pipeline.") and not is_entry_point(e.source):
            out.append(f"{e.source}:{e.line}: imports ray (Ray lives in actors/ and the entry points)")
        if e.local and not e.commented and e.target in HEAVY_OPTIONAL:
            out.append(f"{e.source}:{e.line}: function-local import of {e.target} without a comment saying why")
    forbidden = {
        "pipeline.models": ("pipeline.tiny", "pipeline.critic", "pipeline.data", "pipeline.render"),
        "pipeline.render": ("pipeline.data", "pipeline.metrics", "pipeline.evaluate", "pipeline.critic"),
        "pipeline.metrics": ("pipeline.critic", "pipeline.rollout", "pipeline.loop", "pipeline.evaluate"),
    }
    for e in graph.edges:
        if e.source.startswith("pipeline.") and e.target.startswith("actors") and not is_entry_point(e.source):
            out.append(f"{e.source}:{e.line}: imports {e.target} (pipeline/ is pure logic; actors wrap it)")
        for owner, banned in forbidden.items():
            if e.source == owner or e.source.startswith(owner + "."):
                for b in banned:
                    if e.target == b or e.target.startswith(b + "."):
                        out.append(f"{e.source}:{e.line}: imports {e.target} ({owner} may not import {b})")
        serving = e.source.startswith("pipeline.critic.") and not e.source.startswith("pipeline.critic.training")
        if serving and not is_entry_point(e.source) and e.target.startswith("pipeline.critic.training"):
            out.append(f"{e.source}:{e.line}: imports {e.target} (critic serving never imports its training)")
        if e.local and not is_entry_point(e.source) and not e.commented:
            out.append(f"{e.source}:{e.line}: function-local import of {e.target} without a comment saying why")
    for e in upward_edges(graph):
        out.append(f"{e.source}:{e.line}: imports {e.target}, a floor above it "
                   f"({layer_of(e.source)} → {layer_of(e.target)})")
    for component in cycles(graph):
        out.append(f"import cycle: {' ↔ '.join(component)}")
    return sorted(set(out))


# ---------------------------------------------------------------------------------------------------------
def test_every_module_is_on_a_floor():
    graph = read_graph(REPO)
    for mod in graph.modules:
        layer_of(mod)


def test_no_import_cycles():
    graph = read_graph(REPO)
    assert cycles(graph) == []


def test_the_house_rules_hold():
    graph = read_graph(REPO)
    violations = rule_violations(graph)
    print(f"{len(graph.modules)} modules, {len(graph.internal_pairs())} internal edges, "
          f"{len(upward_edges(graph))} upward, {len(cycles(graph))} cycles")
    assert violations == [], "\n".join(violations)


def test_the_checker_reports_planted_violations(tmp_path):
    """The rules can fail: plant one violation of each kind in a copy of the tree."""
    for top in ("pipeline", "actors"):
        shutil.copytree(REPO / top, tmp_path / top, ignore=shutil.ignore_patterns("__pycache__"))
    assert rule_violations(read_graph(tmp_path)) == []

    def plant(rel: str, text: str) -> None:
        path = tmp_path / rel
        path.write_text(path.read_text() + text)

    plant("pipeline/models/processor.py", "\nfrom pipeline.tiny import ensure_model\n")  # loading builds
    plant("pipeline/render/image.py", "\nfrom pipeline.data.records import png_bytes\n")  # render above data
    plant("pipeline/metrics/image.py", "\nimport ray\n")  # Ray in pipeline/
    plant("pipeline/critic/prompts.py", "\ndef f():\n    from pipeline.critic.training import sft\n")
    plant("pipeline/sample.py", "\nfrom pipeline.tasks import get_task\n")  # a cycle, and upward
    found = "\n".join(rule_violations(read_graph(tmp_path)))
    assert "pipeline.models.processor" in found and "may not import pipeline.tiny" in found
    assert "pipeline.render.image" in found and "may not import pipeline.data" in found
    assert "pipeline.metrics.image" in found and "imports ray" in found
    assert "critic serving never imports its training" in found
    assert "function-local import of pipeline.critic.training.sft without a comment" in found
    assert "import cycle" in found and "pipeline.sample" in found
    assert "pipeline.sample" in found and "a floor above it (0 → 3)" in found
