"""Deployment files stay consistent with the server they deploy.

Every flag the Kubernetes manifests and the Dockerfile pass must be one the built
bert_server accepts, and the probes/ports must point at the ports the server listens on.
Where kubectl is installed, the base and the GPU overlay are rendered with its built-in
kustomize (offline) and the rendered objects are checked the same way, with the Service and
PodDisruptionBudget selecting the Deployment's pods, and validated strictly against the
Kubernetes API schemas (kubernetes-validate) of the oldest and newest supported release; the
base's files are validated as written on every machine.
No cluster is involved: deploy/docker/smoke_test.sh runs the image itself.
"""
import re
import shutil
import subprocess

import pytest
import yaml
from repo_paths import REPO, bin_path


@pytest.fixture(scope="module")
def server_flags():
    out = subprocess.run([bin_path("server", "bert_server"), "--helpfull"], capture_output=True,
                         text=True, timeout=60)
    text = out.stdout + out.stderr
    flags = set(re.findall(r"--([a-z_0-9]+)", text))
    assert "model_dir" in flags, text[:2000]
    return flags


def _flag_names(args):
    return [a[2:].split("=", 1)[0] for a in args if a.startswith("--")]


def _load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def test_k8s_base_args_are_server_flags(server_flags):
    dep = _load_all(REPO / "deploy/k8s/base/deployment.yaml")[0]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    unknown = [f for f in _flag_names(container["args"]) if f not in server_flags]
    assert not unknown, f"unknown server flags in deployment.yaml: {unknown}"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], probe
    args = dict(a[2:].split("=", 1) for a in container["args"] if "=" in a)
    assert args["address"].endswith(":%d" % ports["grpc"])
    assert args["metrics_address"].endswith(":%d" % ports["metrics"])


def test_k8s_gpu_overlay_args_are_server_flags(server_flags):
    patch = _load_all(REPO / "deploy/k8s/overlays/gpu/gpu.yaml")[0]
    args = next(op["value"] for op in patch if op["path"].endswith("/args"))
    unknown = [f for f in _flag_names(args) if f not in server_flags]
    assert not unknown, f"unknown server flags in gpu.yaml: {unknown}"
    resources = next(op["value"] for op in patch if op["path"].endswith("/resources"))
    assert resources["limits"]["nvidia.com/gpu"] == 1


def test_dockerfile_cmd_flags_are_server_flags(server_flags):
    text = (REPO / "deploy/docker/Dockerfile").read_text()
    cmd = re.search(r"CMD \[(.*?)\]", text, re.S).group(1)
    args = re.findall(r'"([^"]+)"', cmd)
    unknown = [f for f in _flag_names(args) if f not in server_flags]
    assert not unknown, f"unknown server flags in Dockerfile: {unknown}"


KUBECTL = shutil.which("kubectl")


def _render(kustomization):
    out = subprocess.run([KUBECTL, "kustomize", str(REPO / "deploy/k8s" / kustomization)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed: cannot render kustomize")
@pytest.mark.parametrize("kustomization", ["base", "overlays/gpu"])
def test_k8s_kustomization_renders_consistent_objects(kustomization, server_flags):
    docs = {d["kind"]: d for d in _render(kustomization)}
    assert sorted(docs) == ["Deployment", "PodDisruptionBudget", "Service"]
    dep = docs["Deployment"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for selector in (dep["spec"]["selector"]["matchLabels"], docs["Service"]["spec"]["selector"],
                     docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]):
        assert selector and all(pod_labels.get(k) == v for k, v in selector.items()), selector
    container = dep["spec"]["template"]["spec"]["containers"][0]
    unknown = [f for f in _flag_names(container["args"]) if f not in server_flags]
    assert not unknown, f"unknown server flags in the rendered {kustomization}: {unknown}"
    # Each Service port reaches a container port, by its name or its number.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for service_port in docs["Service"]["spec"]["ports"]:
        target = service_port["targetPort"]
        assert target in ports or target in ports.values(), service_port
    if kustomization == "overlays/gpu":
        assert "--backend=cuda" in container["args"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


# Kubernetes releases the rendered objects are checked against: the oldest where gRPC probes
# are GA (1.27) and the newest whose schemas kubernetes-validate ships.
SCHEMA_VERSIONS = ["1.27.0", "1.37.0"]


def _validate_strictly(doc, version, source):
    import kubernetes_validate
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{source} {doc['kind']} against Kubernetes {version}: {e}")


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed: cannot render kustomize")
@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("kustomization", ["base", "overlays/gpu"])
def test_k8s_objects_match_the_kubernetes_schema(kustomization, version):
    # Strict: a misspelt or misplaced field (e.g. a probe under the pod instead of the
    # container) is an error, not silently dropped as the API server would.
    for doc in _render(kustomization):
        _validate_strictly(doc, version, kustomization)


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_k8s_base_files_match_the_kubernetes_schema(version):
    # The base's files as written (no kustomize needed): checked on every machine.
    kustomization = _load_all(REPO / "deploy/k8s/base/kustomization.yaml")[0]
    for name in kustomization["resources"]:
        for doc in _load_all(REPO / "deploy/k8s/base" / name):
            _validate_strictly(doc, version, name)


def test_the_schema_check_rejects_a_misspelt_field():
    import kubernetes_validate
    dep = _load_all(REPO / "deploy/k8s/base/deployment.yaml")[0]
    kubernetes_validate.validate(dep, SCHEMA_VERSIONS[0], strict=True)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, SCHEMA_VERSIONS[0], strict=True)
