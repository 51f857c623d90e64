"""Every manifest in cluster/ is what the Kubernetes API server would accept for its kind (the KubeRay v1.7
CRDs' openAPIV3Schema in ../shared/kuberay-crds/, checked with jsonschema), and agrees with the rest of the
project: sizes fit a machine, images are the one the Dockerfile builds, the RayJob runs an existing preset that
fits its cluster, and the RayJob's cluster and runtime_env are the ones in cluster/raycluster.yaml and
cluster/runtime_env.yaml.

Two details of how the API server reads a CRD schema are applied to it before validation, so the check is as
strict as `kubectl apply` (server-side strict field validation, kubectl's default since 1.27):
  - an object schema that lists `properties` and does not say `x-kubernetes-preserve-unknown-fields` rejects
    any other field (a misspelt key is an error, not silently dropped);
  - `x-kubernetes-int-or-string` accepts an integer or a string; `nullable` also accepts null.
CEL rules (`x-kubernetes-validations`) are not evaluated here; they are counted so a reader knows.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.config import REPO_ROOT, load_config
from pipeline.placement import node_groups_from_manifest, parse_quantity, plan_for_config

CLUSTER_DIR = REPO_ROOT / "cluster"
CRD_DIR = REPO_ROOT.parent / "shared" / "kuberay-crds"
MANIFESTS = sorted(p for p in CLUSTER_DIR.glob("*.yaml") if p.name != "runtime_env.yaml")

# The machines the manifests are written for: 8× H100/H200 80+ GB nodes (e.g. p5.48xlarge: 192 vCPUs,
# 2 TiB; DGX H100: 224 threads, 2 TiB), and CPU nodes of at least 32 cores / 128 GiB for the render pods.
GPU_MACHINE = {"cpu": 192, "memory": 2048 * 2**30, "gpu": 8}
CPU_MACHINE = {"cpu": 32, "memory": 128 * 2**30, "gpu": 0}

pytestmark = pytest.mark.skipif(not CRD_DIR.is_dir(), reason=f"KubeRay CRDs not found at {CRD_DIR}")


# ------------------------------------------------------------------------------------------- CRD schemas
def _structural(node, counters: dict) -> dict:
    """A CRD openAPIV3Schema node as JSON Schema with the API server's reading of it (see module doc)."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: _structural(sub, counters) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = _structural(value, counters)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [_structural(sub, counters) for sub in value]
        elif key == "x-kubernetes-validations":
            counters["cel_rules"] = counters.get("cel_rules", 0) + len(value)
        elif not key.startswith("x-kubernetes-") and key != "nullable":
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        counters["int_or_string"] = counters.get("int_or_string", 0) + 1
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_crds() -> dict[tuple[str, str], tuple[dict, dict]]:
    """(apiVersion, kind) -> (JSON Schema, counters), for every served version of every CRD file."""
    crds = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=_LOADER)  # 60k lines: libyaml's parser when present
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                counters: dict = {}
                schema = _structural(version["schema"]["openAPIV3Schema"], counters)
                crds[(f"{group}/{version['name']}", kind)] = (schema, counters)
    return crds


CRDS = _load_crds() if CRD_DIR.is_dir() else {}


def validation_errors(doc: dict) -> list[str]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in CRDS:
        return [f"no served CRD for apiVersion={key[0]!r} kind={key[1]!r} (have: {sorted(CRDS)})"]
    validator = jsonschema.Draft7Validator(CRDS[key][0])
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _pod_templates(doc: dict):
    spec = _cluster_spec(doc)
    yield "headgroup", spec["headGroupSpec"]
    for group in spec.get("workerGroupSpecs", []):
        yield group["groupName"], group


def test_crds_are_loaded_with_their_extensions():
    assert {("ray.io/v1", "RayCluster"), ("ray.io/v1", "RayJob")} <= set(CRDS)
    schema, counters = CRDS[("ray.io/v1", "RayCluster")]
    assert counters["int_or_string"] > 10  # resource quantities, ports, probes...
    assert schema["properties"]["spec"]["additionalProperties"] is False


def test_cluster_dir_has_the_expected_manifests():
    kinds = sorted((d["kind"], p.name) for p in MANIFESTS for d in _docs(p))
    assert ("RayCluster", "raycluster.yaml") in kinds and ("RayJob", "rayjob.yaml") in kinds
    assert ("RayCluster", "raycluster-1x8.yaml") in kinds


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_its_crd(path):
    for doc in _docs(path):
        assert validation_errors(doc) == [], f"{path.name}: {doc.get('kind')} does not validate"


# A deliberately broken manifest must fail, or the check above proves nothing.
def _mutate(doc: dict, fn) -> dict:
    broken = copy.deepcopy(doc)
    fn(broken)
    return broken


BASE = _docs(CLUSTER_DIR / "raycluster.yaml")[0] if (CLUSTER_DIR / "raycluster.yaml").is_file() else {}


@pytest.mark.parametrize("name, mutation, expected", [
    ("misspelt worker field", lambda d: d["spec"]["workerGroupSpecs"][0].update(replica=1), "replica"),
    ("replicas of the wrong type", lambda d: d["spec"]["workerGroupSpecs"][0].update(replicas="two"), "two"),
    ("worker group without a name", lambda d: d["spec"]["workerGroupSpecs"][0].pop("groupName"), "groupName"),
    ("quantity that is a list", lambda d: d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
     ["resources"]["limits"].update(cpu=[8]), "[8]"),
    ("container without image name field typo", lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]
     ["containers"][0].update(imagee="x"), "imagee"),
    ("unknown auth mode", lambda d: d["spec"]["authOptions"].update(mode="password"), "password"),
    ("wrong kind", lambda d: d.update(kind="RayClusterr"), "RayClusterr"),
])
def test_broken_manifest_fails_validation(name, mutation, expected):
    errors = validation_errors(_mutate(BASE, mutation))
    assert errors, f"{name}: a broken manifest validated"
    assert any(expected in e for e in errors), errors


def test_int_or_string_accepts_both_forms():
    as_int = _mutate(BASE, lambda d: d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
                     ["resources"]["limits"].update(cpu=96))
    as_str = _mutate(BASE, lambda d: d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
                     ["resources"]["limits"].update(cpu="96000m"))
    assert validation_errors(as_int) == [] and validation_errors(as_str) == []


# ------------------------------------------------------------------------------------------- consistency
def _container_resources(group: dict) -> dict[str, float]:
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    return {"cpu": parse_quantity(limits["cpu"], "cpu"), "memory": parse_quantity(limits["memory"], "memory"),
            "gpu": parse_quantity(limits.get("nvidia.com/gpu", 0), "gpu")}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_group_fits_its_machine(path):
    for doc in _docs(path):
        gpu_pods_total = {"cpu": 0.0, "memory": 0.0, "gpu": 0.0}
        for name, group in _pod_templates(doc):
            container = group["template"]["spec"]["containers"][0]
            res = container["resources"]
            assert res["limits"] == res["requests"], f"{name}: requests != limits (Guaranteed QoS expected)"
            need = _container_resources(group)
            machine = GPU_MACHINE if need["gpu"] else CPU_MACHINE
            for key, have in machine.items():
                assert need[key] <= have, f"{path.name}: {name} asks {need[key]:g} {key}, a machine has {have:g}"
            if need["gpu"]:
                for key in gpu_pods_total:
                    gpu_pods_total[key] += need[key] * group.get("replicas", 1)
            shm = [v for v in group["template"]["spec"]["volumes"] if v["name"] == "dshm"]
            assert shm and shm[0]["emptyDir"]["medium"] == "Memory", f"{name}: no in-memory /dev/shm"
            assert parse_quantity(shm[0]["emptyDir"]["sizeLimit"], "shm") < need["memory"]
        machines = gpu_pods_total["gpu"] / GPU_MACHINE["gpu"]
        assert machines == int(machines), f"{path.name}: GPU pods do not fill whole machines"
        for key in ("cpu", "memory"):  # the GPU pods of n machines fit in n machines
            assert gpu_pods_total[key] <= machines * GPU_MACHINE[key], f"{path.name}: GPU pods' {key}"


def test_render_group_has_exactly_the_sandbox_privileges():
    render = dict(_pod_templates(BASE))["render"]
    ctx = render["template"]["spec"]["containers"][0]["securityContext"]
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert sorted(ctx["capabilities"]["add"]) == ["CHOWN", "DAC_OVERRIDE", "KILL", "SETGID", "SETUID", "SYS_ADMIN"]
    assert ctx["runAsUser"] == 0 and not ctx.get("privileged", False)
    assert ctx["seccompProfile"]["type"] == "RuntimeDefault"
    assert ctx["appArmorProfile"]["type"] == "Unconfined"
    assert render["template"]["spec"]["automountServiceAccountToken"] is False
    for name, group in _pod_templates(BASE):  # everything else: non-root, no capabilities
        if name == "render":
            continue
        pod_ctx = group["template"]["spec"]["securityContext"]
        ctx = group["template"]["spec"]["containers"][0]["securityContext"]
        assert pod_ctx["runAsNonRoot"] is True and ctx["allowPrivilegeEscalation"] is False, name
        assert ctx["capabilities"] == {"drop": ["ALL"]}, name


def _dockerfile_image() -> str:
    text = (CLUSTER_DIR / "Dockerfile").read_text()
    match = re.search(r'org\.opencontainers\.image\.ref\.name="([^"]+)"', text)
    assert match, "cluster/Dockerfile has no org.opencontainers.image.ref.name label (the tag it is built as)"
    return match.group(1)


def test_images_are_the_one_the_dockerfile_builds():
    image = _dockerfile_image()
    version = re.search(r'^version = "([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert image == f"visual-erm-rl:{version}", "the image tag follows the project version"
    for path in MANIFESTS:
        for doc in _docs(path):
            for name, group in _pod_templates(doc):
                for container in group["template"]["spec"]["containers"]:
                    assert container["image"] == image, f"{path.name}: {name} runs {container['image']}"


def test_dockerfile_installs_what_the_sandbox_and_renderers_need():
    text = (CLUSTER_DIR / "Dockerfile").read_text()
    for package in ("chromium", "fonts-noto-cjk", "libnl-route-3-200", "libseccomp2", "util-linux"):
        assert re.search(rf"\b{re.escape(package)}\b", text), package
    assert re.search(r"pip install[^\n]*\.\[gpu\]", text), "the project with its gpu extra"
    assert re.search(r"^USER ray$", text, re.MULTILINE) or "useradd" in text


def test_rayjob_runs_an_existing_preset_that_fits_its_cluster():
    job = _docs(CLUSTER_DIR / "rayjob.yaml")[0]
    match = re.search(r"python pipeline/main\.py .*--config (\S+)", job["spec"]["entrypoint"])
    assert match, job["spec"]["entrypoint"]
    preset = REPO_ROOT / match.group(1)
    assert preset.is_file(), f"entrypoint names {preset}, which does not exist"
    cfg = load_config(preset)
    result = plan_for_config(cfg, node_groups_from_manifest(job, "rayjob.yaml"))
    assert result.fits, result.format()


def test_rayjob_carries_the_raycluster_spec_and_the_runtime_env():
    job = _docs(CLUSTER_DIR / "rayjob.yaml")[0]
    assert job["spec"]["rayClusterSpec"] == BASE["spec"], "rayjob.yaml drifted from raycluster.yaml"
    runtime_env = yaml.safe_load((CLUSTER_DIR / "runtime_env.yaml").read_text())
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"]) == runtime_env
    assert "pip" not in runtime_env and "uv" not in runtime_env, "dependencies come from the image"
    secret_like = re.compile(r"(_KEY|_TOKEN|SECRET|PASSWORD)$")
    assert not any(secret_like.search(k) for k in runtime_env["env_vars"]), "no secrets in it"


def test_one_node_cluster_differs_from_the_paper_scale_one_only_in_sizes():
    """raycluster-1x8.yaml repeats raycluster.yaml's pods with other sizes; nothing else may drift."""
    def without_sizes(doc: dict) -> dict:
        doc = copy.deepcopy(doc)
        doc["metadata"].pop("name")
        doc["metadata"].pop("annotations")  # the node type each is sized for
        for _, group in _pod_templates(doc):
            for key in ("replicas", "minReplicas", "maxReplicas"):
                group.pop(key, None)
            group["template"]["spec"]["containers"][0].pop("resources")
            for volume in group["template"]["spec"]["volumes"]:
                volume.get("emptyDir", {}).pop("sizeLimit", None)
        return doc

    small = _docs(CLUSTER_DIR / "raycluster-1x8.yaml")[0]
    assert without_sizes(small) == without_sizes(BASE)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_pod_tolerates_the_gpu_nodes_taint(path):
    """GPU nodes usually carry `nvidia.com/gpu:NoSchedule`; on a one-machine cluster the head and render pods must
    land there too, or the cluster never starts."""
    for doc in _docs(path):
        for name, group in _pod_templates(doc):
            tolerations = group["template"]["spec"].get("tolerations", [])
            assert any(t.get("key") == "nvidia.com/gpu" and t.get("operator") == "Exists" for t in tolerations), \
                f"{path.name}: {name} does not tolerate nvidia.com/gpu"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_names_its_node_type_and_fits_it(path):
    """Pods a node cannot hold never schedule: each manifest names the machine it is sized for, and its pods fit it
    (the one-machine cluster: all of them together)."""
    from pipeline.placement import node_groups_from_manifest, node_type_from_manifest, node_type_report

    doc = _docs(path)[0]
    node_type = node_type_from_manifest(doc, path.name)
    assert node_type is not None, f"{path.name} names no node type (visual-erm-rl/node-capacity)"
    lines, problems = node_type_report(node_type, node_groups_from_manifest(doc, path.name))
    assert problems == [], problems
    if path.name == "raycluster-1x8.yaml":
        assert node_type.nodes == 1 and any(line.startswith("pods in all: CPU 90/94") for line in lines), lines


def test_a_cluster_too_big_for_its_node_type_is_reported():
    from pipeline.placement import NodeGroup, NodeType, node_type_report

    groups = [NodeGroup("headgroup", 1, 0, 0, 32 * 2**30, True, pod_cpus=8), NodeGroup("trainer", 1, 48, 4, 400 * 2**30,
                                                                                        pod_cpus=48, pod_gpus=4),
              NodeGroup("render", 1, 32, 0, 64 * 2**30, pod_cpus=32), NodeGroup("gpu", 2, 24, 2, 200 * 2**30,
                                                                                 pod_cpus=24, pod_gpus=2)]
    _, problems = node_type_report(NodeType("96 vCPU", 94, 1800 * 2**30, 8, nodes=1), groups)
    assert problems == ["the pods ask CPU 136 in all, more than 1 node(s) of the type have"]
    _, problems = node_type_report(NodeType("small", 40, 1800 * 2**30, 8), groups)
    assert problems == ["a trainer pod asks CPU 48, more than one node has"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_nccl_pods_name_their_network(path):
    """The trainer ranks (FSDP collectives) and the rollout engines (the NCCL weight broadcast) say which interface
    NCCL bootstraps on and that it may use InfiniBand/RoCE: the parameters a cluster admin adapts."""
    for doc in _docs(path):
        for name, group in _pod_templates(doc):
            if name in ("trainer", "rollout"):
                env = {e["name"]: e.get("value") for e in group["template"]["spec"]["containers"][0].get("env", [])}
                assert {"NCCL_SOCKET_IFNAME", "NCCL_IB_DISABLE"} <= set(env), f"{path.name}: {name}"
