"""Where a run's actors go: node groups of a Ray cluster, actor requests from the config, a first-fit plan.

Pure logic (no Ray import), shared by two callers:
  - `python pipeline/main.py --dry-run --config PRESET [--cluster MANIFEST]`: node groups parsed from a KubeRay
    RayCluster/RayJob manifest, before any pod exists;
  - `actors/cluster.check_fits`: node groups read from the running cluster (`ray.nodes()`), before any actor
    is created, so a request Ray could never satisfy fails at once instead of waiting forever.

Node resources follow what KubeRay passes to `ray start` for a group: the group's top-level `resources`
(KubeRay ≥ 1.5), else `rayStartParams` (num-cpus, num-gpus, memory), else the Ray container's limits (requests
when there are no limits); CPU is rounded up to a whole number as KubeRay does. Every pod of group G carries the
Ray node label `ray.io/node-group=G` (KubeRay sets RAY_NODE_TYPE_NAME to the group name and Ray turns it into
that label), which is what an actor group's `node_group` setting selects.

Placement mirrors Ray for these long-lived actors: requests are placed in the order the driver creates them
(render, reward, trainer, rollout), each replica on the first node (in manifest order) of its target group
with enough free CPU and GPU. A request without GPUs tries GPU-less nodes first, as Ray's scheduler does
(RAY_scheduler_avoid_gpu_nodes). The trainer's ranks form one PACK placement group: first-fit fills one node
before the next, which is what PACK does.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from pipeline.config import Config

NODE_GROUP_LABEL = "ray.io/node-group"  # Ray's default node label, from KubeRay's RAY_NODE_TYPE_NAME
HEAD_GROUP = "headgroup"  # the value KubeRay gives the head pod's ray.io/group label
RESOURCES = ("CPU", "GPU")  # what the actor groups request
_EPS = 1e-9


class PlacementError(ValueError):
    """A manifest that cannot be read as a Ray cluster, or a preset that names no cluster."""


# ------------------------------------------------------------------------------------------------ requests
@dataclass(frozen=True)
class ActorRequest:
    """What one kind of actor asks Ray for, per replica."""

    name: str  # config path of the actor group, e.g. "render" — used in error messages
    replicas: int
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    node_group: str | None = None  # value of the ray.io/node-group label the replicas must run on
    placement_group: bool = False  # replicas are the bundles of one PACK placement group (trainer ranks)

    def per_replica(self) -> dict[str, float]:
        return {k: v for k, v in (("CPU", self.num_cpus), ("GPU", self.num_gpus)) if v > 0}

    def label_selector(self) -> dict[str, str]:
        """What to pass as `.options(label_selector=...)` (empty: no targeting)."""
        return {NODE_GROUP_LABEL: self.node_group} if self.node_group else {}


def requests_from_config(cfg: Config) -> list[ActorRequest]:
    """Every long-lived actor the driver creates, in creation order (pipeline/main.py run())."""
    t, r = cfg.trainer, cfg.reward.actors
    return [
        ActorRequest("render", cfg.render.actors, cfg.render.cpus_per_actor, 0.0, cfg.render.node_group),
        ActorRequest("reward", r.replicas, r.num_cpus, r.num_gpus, r.node_group),
        ActorRequest("trainer", t.ranks, t.num_cpus_per_rank, t.num_gpus_per_rank, t.node_group,
                     placement_group=True),
        ActorRequest("rollout", cfg.rollout.replicas, cfg.rollout.num_cpus, cfg.rollout.num_gpus,
                     cfg.rollout.node_group),
    ]


def config_problems(cfg: Config) -> list[str]:
    """Settings that would place fine but break once the engines start: a vLLM engine with tensor parallel
    size N inside one Ray actor sees exactly the GPUs that actor was given."""
    problems = []
    if cfg.rollout.backend == "vllm":
        tp = cfg.rollout.vllm.tensor_parallel_size
        if cfg.rollout.num_gpus != tp:
            problems.append(f"rollout: vLLM tensor_parallel_size={tp} needs rollout.num_gpus={tp} per replica, "
                            f"got {cfg.rollout.num_gpus:g}")
    if cfg.reward.backend == "vllm":
        tp = cfg.reward.vllm.tensor_parallel_size
        if cfg.reward.actors.num_gpus != tp:
            problems.append(f"reward: vLLM tensor_parallel_size={tp} needs reward.actors.num_gpus={tp} per "
                            f"replica, got {cfg.reward.actors.num_gpus:g}")
    if cfg.trainer.num_gpus_per_rank not in (0, 1):
        problems.append(f"trainer: one FSDP rank drives one GPU; trainer.num_gpus_per_rank must be 0 or 1, got "
                        f"{cfg.trainer.num_gpus_per_rank:g}")
    return problems


# ------------------------------------------------------------------------------------------------- cluster
@dataclass(frozen=True)
class NodeGroup:
    """`replicas` identical Ray nodes (KubeRay pods of one group)."""

    name: str
    replicas: int
    cpus: float
    gpus: float
    memory_bytes: int = 0
    is_head: bool = False
    # What each pod asks Kubernetes for (container requests), which a node must hold; Ray's view (`cpus`) can be
    # smaller (the head advertises 0 CPUs to Ray but its pod still takes its CPUs from the node).
    pod_cpus: float = 0.0
    pod_gpus: float = 0.0

    def capacity(self) -> dict[str, float]:
        return {"CPU": self.cpus, "GPU": self.gpus}


_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def parse_quantity(value: str | float, what: str) -> float:
    """A Kubernetes resource quantity ("500m", "64Gi", 8, "1e3") as a number."""
    if isinstance(value, bool):
        raise PlacementError(f"{what}: {value!r} is not a quantity")
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise PlacementError(f"{what}: {value!r} is not a Kubernetes quantity (e.g. 8, 500m, 64Gi)")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def format_bytes(n: float) -> str:
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20)):
        if n >= size:
            return f"{n / size:g}{unit}"
    return f"{n:g}"


def _group_resources(group: dict, where: str, is_head: bool, name: str, replicas: int) -> NodeGroup:
    spec = (group.get("template") or {}).get("spec") or {}
    containers = spec.get("containers") or []
    if not containers:
        raise PlacementError(f"{where}: the pod template has no containers")
    ray_container = containers[0]  # KubeRay runs Ray in the first container
    limits = (ray_container.get("resources") or {}).get("limits") or {}
    requests = (ray_container.get("resources") or {}).get("requests") or {}
    params = {k: v for k, v in (group.get("rayStartParams") or {}).items()}
    top = group.get("resources") or {}  # KubeRay >= 1.5: Ray resources of the group, e.g. {CPU: "0"}

    def container_value(key_match) -> str | int | float | None:
        for source in (limits, requests):
            for key, value in source.items():
                if key_match(key):
                    return value
        return None

    def pick(ray_key: str, param: str, key_match) -> float | None:
        if ray_key in top:
            return parse_quantity(top[ray_key], f"{where}.resources.{ray_key}")
        if param in params:
            return parse_quantity(params[param], f"{where}.rayStartParams.{param}")
        value = container_value(key_match)
        return None if value is None else parse_quantity(value, f"{where} container {ray_key}")

    cpus = pick("CPU", "num-cpus", lambda k: k == "cpu")
    if cpus is None:
        raise PlacementError(f"{where}: no CPU count (set resources.limits.cpu or rayStartParams.num-cpus)")
    gpus = pick("GPU", "num-gpus", lambda k: k.endswith("/gpu")) or 0.0
    memory = pick("memory", "memory", lambda k: k == "memory") or 0.0
    pod_cpu, pod_gpu = container_value(lambda k: k == "cpu"), container_value(lambda k: k.endswith("/gpu"))
    return NodeGroup(name=name, replicas=replicas, cpus=float(math.ceil(cpus - _EPS)), gpus=gpus,
                     memory_bytes=int(memory), is_head=is_head,
                     pod_cpus=parse_quantity(pod_cpu, f"{where} container cpu") if pod_cpu is not None else cpus,
                     pod_gpus=parse_quantity(pod_gpu, f"{where} container gpu") if pod_gpu is not None else gpus)


# The machine a manifest is sized for, in its metadata annotations, e.g.
#   visual-erm-rl/node-type: "8x H100 80GB, 96 vCPU, 1900 GiB (Azure ND96isr H100 v5 class)"
#   visual-erm-rl/node-capacity: "cpu=96,memory=1900Gi,gpu=8"
#   visual-erm-rl/nodes: "1"      # optional: the whole cluster on this many such machines
NODE_TYPE, NODE_CAPACITY, NODES = "visual-erm-rl/node-type", "visual-erm-rl/node-capacity", "visual-erm-rl/nodes"


@dataclass(frozen=True)
class NodeType:
    description: str
    cpus: float
    memory_bytes: float
    gpus: float
    nodes: int | None = None  # the cluster must fit on this many nodes (pods in all); None: each pod on one


def node_type_from_manifest(doc: dict, source: str = "manifest") -> NodeType | None:
    notes = (doc.get("metadata") or {}).get("annotations") or {}
    if NODE_CAPACITY not in notes:
        return None
    fields = dict(part.split("=", 1) for part in str(notes[NODE_CAPACITY]).split(",") if "=" in part)
    try:
        return NodeType(str(notes.get(NODE_TYPE, "")), parse_quantity(fields["cpu"], f"{source}: node cpu"),
                        parse_quantity(fields["memory"], f"{source}: node memory"),
                        parse_quantity(fields.get("gpu", 0), f"{source}: node gpu"),
                        int(notes[NODES]) if NODES in notes else None)
    except KeyError as e:
        raise PlacementError(f"{source}: {NODE_CAPACITY} needs cpu= and memory= (got {notes[NODE_CAPACITY]!r})") from e


def node_type_report(node_type: NodeType, groups: list[NodeGroup]) -> tuple[list[str], list[str]]:
    """(lines for the report, problems): every pod fits one node of the type; with `nodes`, all pods fit that
    many nodes' CPUs, memory and GPUs."""
    lines = [f"node type: {node_type.description or '(unnamed)'}: CPU {node_type.cpus:g}, memory "
             f"{format_bytes(node_type.memory_bytes)}, GPU {node_type.gpus:g}"]
    problems = []
    for g in groups:
        for what, need, have in (("CPU", g.pod_cpus, node_type.cpus), ("memory", g.memory_bytes, node_type.memory_bytes),
                                 ("GPU", g.pod_gpus, node_type.gpus)):
            if need > have + _EPS:
                shown = format_bytes(need) if what == "memory" else f"{need:g}"
                problems.append(f"a {g.name} pod asks {what} {shown}, more than one node has")
    if node_type.nodes:
        totals = {"CPU": sum(g.pod_cpus * g.replicas for g in groups),
                  "memory": sum(g.memory_bytes * g.replicas for g in groups),
                  "GPU": sum(g.pod_gpus * g.replicas for g in groups)}
        have = {"CPU": node_type.cpus * node_type.nodes, "memory": node_type.memory_bytes * node_type.nodes,
                "GPU": node_type.gpus * node_type.nodes}
        lines.append(f"pods in all: CPU {totals['CPU']:g}/{have['CPU']:g}, memory {format_bytes(totals['memory'])}/"
                     f"{format_bytes(have['memory'])}, GPU {totals['GPU']:g}/{have['GPU']:g} on {node_type.nodes} "
                     "node(s)")
        problems += [f"the pods ask {k} {format_bytes(v) if k == 'memory' else f'{v:g}'} in all, more than "
                     f"{node_type.nodes} node(s) of the type have" for k, v in totals.items() if v > have[k] + _EPS]
    return lines, problems


def node_groups_from_manifest(doc: dict, source: str = "manifest") -> list[NodeGroup]:
    """Node groups of a RayCluster (spec) or RayJob (spec.rayClusterSpec) document; head first."""
    kind = doc.get("kind")
    if kind == "RayCluster":
        cluster = doc.get("spec") or {}
    elif kind == "RayJob":
        cluster = (doc.get("spec") or {}).get("rayClusterSpec")
        if not cluster:
            raise PlacementError(f"{source}: RayJob without spec.rayClusterSpec (it uses an existing cluster: "
                                 "pass that cluster's manifest with --cluster)")
    else:
        raise PlacementError(f"{source}: kind {kind!r} is not a RayCluster or RayJob")
    head = cluster.get("headGroupSpec")
    if not head:
        raise PlacementError(f"{source}: no headGroupSpec")
    groups = [_group_resources(head, f"{source}: headGroupSpec", True, HEAD_GROUP, 1)]
    for i, worker in enumerate(cluster.get("workerGroupSpecs") or []):
        name = worker.get("groupName")
        if not name:
            raise PlacementError(f"{source}: workerGroupSpecs[{i}] has no groupName")
        replicas = int(worker.get("replicas", worker.get("minReplicas", 0)) or 0)
        replicas *= int(worker.get("numOfHosts", 1) or 1)
        if worker.get("suspend"):
            replicas = 0
        groups.append(_group_resources(worker, f"{source}: workerGroupSpecs[{i}] ({name})", False, name, replicas))
    names = Counter(g.name for g in groups)
    if any(n > 1 for n in names.values()):
        raise PlacementError(f"{source}: duplicate group names {[k for k, n in names.items() if n > 1]}")
    return groups


def load_manifest(path: str | Path) -> tuple[dict, list[NodeGroup]]:
    """The first RayCluster/RayJob document of a YAML file and its node groups."""
    path = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except OSError as e:
        raise PlacementError(f"cannot read cluster manifest {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise PlacementError(f"{path}: invalid YAML: {e}") from None
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") in ("RayCluster", "RayJob"):
            return doc, node_groups_from_manifest(doc, source=str(path))
    raise PlacementError(f"{path}: no RayCluster or RayJob document")


_PRESET_CLUSTER = re.compile(r"^#\s*cluster:\s*(\S+)\s*$")


def preset_cluster_manifest(preset: str | Path, repo_root: Path) -> Path | None:
    """The manifest a preset declares it is sized for, in a header comment `# cluster: cluster/NAME.yaml`
    (a comment, so the strict config schema stays about the run; relative to the repository root)."""
    try:
        lines = Path(preset).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.strip() and not line.startswith("#"):
            break  # only the header comment block counts
        match = _PRESET_CLUSTER.match(line)
        if match:
            target = Path(match.group(1))
            return target if target.is_absolute() else repo_root / target
    return None


# --------------------------------------------------------------------------------------------------- plan
@dataclass
class Node:
    name: str  # "<group>-<index>"
    group: str
    capacity: dict[str, float]
    free: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.free = dict(self.capacity)

    @property
    def has_gpu(self) -> bool:
        return self.capacity.get("GPU", 0.0) > 0

    def fits(self, need: dict[str, float]) -> bool:
        return all(self.free.get(k, 0.0) + _EPS >= v for k, v in need.items())


@dataclass
class PlacementPlan:
    groups: list[NodeGroup]
    requests: list[ActorRequest]
    nodes: list[Node]
    placed: dict[str, list[str]]  # request name -> node name of each placed replica, in order
    problems: list[str]

    @property
    def fits(self) -> bool:
        return not self.problems

    def counts(self, request: str) -> dict[str, int]:
        """Replicas of `request` per node, e.g. {"trainer-0": 8, "trainer-1": 8}."""
        return dict(Counter(self.placed.get(request, [])))

    def format(self, title: str = "") -> str:
        out = [title] if title else []
        out.append("node groups:")
        for g in self.groups:
            role = "head: runs the driver" if g.is_head else "worker"
            out.append(f"  {g.name:<12} {g.replicas} node(s) × CPU {g.cpus:g}, GPU {g.gpus:g}, "
                       f"memory {format_bytes(g.memory_bytes)}  ({role})")
        out.append("actor groups (in the order the driver creates them):")
        for r in self.requests:
            need = ", ".join(f"{k} {v:g}" for k, v in r.per_replica().items()) or "nothing"
            target = f"node group {r.node_group!r}" if r.node_group else "any node"
            pg = ", one PACK placement group" if r.placement_group else ""
            where = ", ".join(f"{n} ×{c}" for n, c in self.counts(r.name).items()) or "-"
            out.append(f"  {r.name:<8} {r.replicas} × {{{need}}} on {target}{pg} → {where}")
        out.append("use per node:")
        for n in self.nodes:
            used = ", ".join(f"{k} {n.capacity[k] - n.free[k]:g}/{n.capacity[k]:g}" for k in RESOURCES)
            out.append(f"  {n.name:<14} {used}")
        if self.problems:
            out.append("DOES NOT FIT:")
            out.extend(f"  - {p}" for p in self.problems)
        else:
            out.append("fits: every actor has a node")
        return "\n".join(out)


def plan(requests: list[ActorRequest], groups: list[NodeGroup]) -> PlacementPlan:
    """Deterministic first-fit of every replica; problems name the actor group and the missing resource."""
    nodes: list[Node] = []
    seen: Counter = Counter()  # several groups may share a name (live nodes: one group per node)
    for g in groups:
        for _ in range(g.replicas):
            nodes.append(Node(f"{g.name}-{seen[g.name]}", g.name, g.capacity()))
            seen[g.name] += 1
    group_names = list(dict.fromkeys(g.name for g in groups))
    placed: dict[str, list[str]] = {}
    problems: list[str] = []
    for req in requests:
        placed[req.name] = []
        need = req.per_replica()
        if req.node_group is not None and req.node_group not in group_names:
            problems.append(f"{req.name}: node group {req.node_group!r} is not in the cluster "
                            f"(groups: {', '.join(group_names)})")
            continue
        eligible = [n for n in nodes if req.node_group is None or n.group == req.node_group]
        if "GPU" not in need:  # Ray keeps GPU-less work off GPU nodes while other nodes can take it
            eligible = [n for n in eligible if not n.has_gpu] + [n for n in eligible if n.has_gpu]
        for index in range(req.replicas):
            node = next((n for n in eligible if n.fits(need)), None)
            if node is None:
                problems.append(_shortage(req, index, need, eligible))
                break
            for k, v in need.items():
                node.free[k] -= v
            placed[req.name].append(node.name)
    return PlacementPlan(groups, requests, nodes, placed, problems)


def _shortage(req: ActorRequest, index: int, need: dict[str, float], eligible: list[Node]) -> str:
    scope = f"node group {req.node_group!r}" if req.node_group else "the cluster"
    for resource, amount in need.items():  # a replica bigger than every node can never be placed
        largest = max((n.capacity.get(resource, 0.0) for n in eligible), default=0.0)
        if amount > largest + _EPS:
            return (f"{req.name}: one replica asks for {amount:g} {resource} but the largest node in {scope} "
                    f"has {largest:g} {resource}")
    short = [k for k in need if not any(n.free.get(k, 0.0) + _EPS >= need[k] for n in eligible)] or list(need)
    parts = []
    for resource in short:
        wanted = req.replicas * need[resource]
        have = sum(n.capacity.get(resource, 0.0) for n in eligible)
        free = ", ".join(f"{n.name} {n.free.get(resource, 0.0):g}" for n in eligible) or "no nodes"
        parts.append(f"{resource}: {req.replicas}×{need[resource]:g} = {wanted:g} {resource} wanted, {scope} has "
                     f"{have:g} (free on each node now: {free})")
    return f"{req.name}: only {index} of {req.replicas} replicas fit; " + "; ".join(parts)


def plan_for_config(cfg: Config, groups: list[NodeGroup]) -> PlacementPlan:
    result = plan(requests_from_config(cfg), groups)
    result.problems = config_problems(cfg) + result.problems
    return result


def summary(result: PlacementPlan) -> dict[str, Any]:
    """Machine-readable form (tests, logs): replicas per node for each actor group."""
    return {r.name: result.counts(r.name) for r in result.requests} | {"fits": result.fits}


def resolve_preset_path(config_arg: str | None, config_dir: Path) -> Path | None:
    """The YAML file `--config` names (a path, or a bare name in configs/, as load_config resolves it)."""
    if config_arg is None:
        return config_dir / "default.yaml"
    path = Path(config_arg)
    if path.is_file():
        return path
    candidate = config_dir / f"{config_arg}.yaml"
    return candidate if candidate.is_file() else None


def dry_run(cfg: Config, config_arg: str | None, cluster_arg: str | None, repo_root: Path) -> tuple[int, str]:
    """`main.py --dry-run`: (exit code, report). 0: everything fits; 3: it does not (the report names the
    actor group and resource; the code a real run exits with when the cluster cannot host it); 2: no usable
    cluster manifest.

    The cluster is a KubeRay manifest: `--cluster PATH`, else the one the preset declares in its header
    (`# cluster: cluster/...yaml`). A dry run never connects to Ray; a real run checks the running cluster's
    nodes with the same first-fit (actors/cluster.check_fits) before it creates any actor.
    """
    preset = resolve_preset_path(config_arg, repo_root / "configs")
    if cluster_arg is not None:
        manifest = Path(cluster_arg)
    else:
        manifest = preset_cluster_manifest(preset, repo_root) if preset is not None else None
        if manifest is None:
            return 2, (f"dry run: {preset or config_arg} declares no cluster (a `# cluster: cluster/NAME.yaml` "
                       "header line); pass --cluster cluster/NAME.yaml")
    try:
        doc, groups = load_manifest(manifest)
    except PlacementError as e:
        return 2, f"dry run: {e}"
    result = plan_for_config(cfg, groups)
    extra: list[str] = []
    try:
        node_type = node_type_from_manifest(doc, str(manifest))
    except PlacementError as e:
        return 2, f"dry run: {e}"
    if node_type is not None:
        extra, problems = node_type_report(node_type, groups)
        result.problems += problems
    name = (doc.get("metadata") or {}).get("name", "?")
    title = (f"placement plan: {_shown(preset or Path(str(config_arg)), repo_root)} on "
             f"{_shown(manifest, repo_root)} ({doc.get('kind')} {name})")
    return (0 if result.fits else 3), "\n".join([result.format(title), *extra])


def _shown(path: Path, repo_root: Path) -> str:
    """A path as the user would type it: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(repo_root.resolve()))
    except ValueError:
        return str(path)
