"""Deployment files stay consistent with the server they deploy.

Every flag the Kubernetes manifests and the Dockerfile pass must be one the built
bert_server accepts, and the probes/ports must point at the ports the server listens on.
Where kubectl is installed, the base and the GPU overlay are rendered with its built-in
kustomize (offline) and the rendered objects are checked the same way, with the Service and
PodDisruptionBudget selecting the Deployment's pods, and validated strictly against the
Kubernetes API schemas (kubernetes-validate) of the oldest and newest supported release; the
base's files are validated as written on every machine. The Unix-socket sidecar example is
checked the same way, and its server command line, probe and application script are run
here with the paths mapped onto the checkout.
No cluster is involved: deploy/docker/smoke_test.sh runs the image itself.
"""
import os
import re
import shutil
import signal
import subprocess
import time

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


def _server_default(flag):
    out = subprocess.run([bin_path("server", "bert_server"), "--helpfull"], capture_output=True,
                         text=True, timeout=60)
    return re.search(rf"--{flag} \(.*?\);\s+default: (\S+);", out.stdout + out.stderr,
                     re.S).group(1)


def _check_grace_period(pod_spec, args):
    """The kubelet's SIGKILL must not cut the server's stop short: the drain delay, the drain's
    limit and its last seconds (1 s for calls that do not end by themselves, up to 5 s for gRPC's
    shutdown after cancelling them, 1 s for the engine) fit in the termination grace period."""
    values = dict(a[2:].split("=", 1) for a in args if "=" in a)
    needed = (int(values.get("drain_delay_s", _server_default("drain_delay_s"))) +
              int(values.get("drain_timeout_s", _server_default("drain_timeout_s"))) + 7)
    assert pod_spec["terminationGracePeriodSeconds"] > needed, (needed, values)


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
    _check_grace_period(dep["spec"]["template"]["spec"], container["args"])


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


def _dockerfile_healthcheck():
    """The Dockerfile's HEALTHCHECK: (its options, its shell command)."""
    text = (REPO / "deploy/docker/Dockerfile").read_text().replace("\\\n", " ")
    m = re.search(r"^HEALTHCHECK (.*?)\bCMD (.+)$", text, re.M)
    assert m, "no HEALTHCHECK in the Dockerfile"
    options = dict(re.findall(r"--([a-z-]+)=(\S+)", m.group(1)))
    return options, m.group(2).strip()


def test_dockerfile_healthcheck_follows_grpc_health():
    """The image's HEALTHCHECK, run as Docker runs it (sh -c; 0 healthy, 1 unhealthy) with the
    built client, against a serving server, one in its drain delay (NOT_SERVING) and none."""
    from server_harness import Server
    options, command = _dockerfile_healthcheck()
    text = (REPO / "deploy/docker/Dockerfile").read_text()
    cmd_args = re.findall(r'"([^"]+)"', re.search(r"CMD \[(.*?)\]", text, re.S).group(1))
    address = next(a.split("=", 1)[1] for a in cmd_args if a.startswith("--address="))
    target = f"127.0.0.1:{address.rsplit(':', 1)[1]}"
    assert f"--server={target} " in command, (command, address)
    # The client gives up before Docker's timeout kills it.
    timeout_ms = int(re.search(r"--timeout_ms=(\d+)", command).group(1))
    assert timeout_ms < 1000 * int(options["timeout"].rstrip("s")), (command, options)
    assert command.startswith("bert_client ")
    env = dict(os.environ, PATH=f"{os.path.dirname(bin_path('client', 'bert_client'))}:"
               f"{os.environ['PATH']}")

    def healthcheck(address):
        run = subprocess.run(["sh", "-c", command.replace(target, address)], env=env,
                             capture_output=True, text=True, timeout=30)
        return run.returncode

    with Server() as s:
        assert healthcheck(s.address) == 0
        with Server(extra=["--drain_delay_s=600"]) as draining:
            draining.enter_drain_delay()
            assert draining.health() == "NOT_SERVING"
            assert healthcheck(draining.address) == 1
            port = draining.port
        assert healthcheck(f"127.0.0.1:{port}") == 1  # nothing listens there now
        assert healthcheck(s.address) == 0


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
    _check_grace_period(dep["spec"]["template"]["spec"], container["args"])
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


# ---- The example of the server as a sidecar on a Unix socket ----

SIDECAR = REPO / "deploy/k8s/examples/unix-socket-sidecar"
# Native sidecars (an init container with restartPolicy: Always) are on by default from 1.29.
SIDECAR_SCHEMA_VERSIONS = ["1.29.0", "1.37.0"]


def _sidecar_pod():
    dep = _load_all(SIDECAR / "deployment.yaml")[0]
    pod = dep["spec"]["template"]["spec"]
    (server,) = pod["initContainers"]
    (app,) = pod["containers"]
    return dep, pod, server, app


def _arg(args, name):
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"--{name}="))


def test_sidecar_example_is_consistent(server_flags):
    dep, pod, server, app = _sidecar_pod()
    assert server["restartPolicy"] == "Always"  # a sidecar, not an init step
    unknown = [f for f in _flag_names(server["args"]) if f not in server_flags]
    assert not unknown, f"unknown server flags in the sidecar example: {unknown}"
    address = _arg(server["args"], "address")
    assert address.startswith("unix:/"), address
    socket_dir = address[len("unix:"):].rsplit("/", 1)[0]
    # Both probes ask the server's health over its socket; the app is pointed at it.
    for probe in ("startupProbe", "livenessProbe"):
        command = server[probe]["exec"]["command"]
        assert command[0] == "bert_client" and command[-1] == "health", command
        assert f"--server={address}" in command, command
    assert {e["name"]: e["value"] for e in app["env"]}["BERT_SERVER"] == address
    assert '--server="$BERT_SERVER"' in app["args"][0]
    # The socket's directory is one emptyDir both containers mount.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [{m["mountPath"]: m["name"] for m in c["volumeMounts"]}[socket_dir]
              for c in (server, app)]
    assert mounts[0] == mounts[1] and "emptyDir" in volumes[mounts[0]], mounts
    # One uid for the pod (the socket's owner can connect), no container overriding it.
    assert pod["securityContext"]["runAsUser"] == 10001
    for c in (server, app):
        assert "runAsUser" not in c.get("securityContext", {}), c["name"]
    metrics_port = {p["name"]: p["containerPort"] for p in server["ports"]}["metrics"]
    assert _arg(server["args"], "metrics_address").endswith(f":{metrics_port}")
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in dep["spec"]["selector"]["matchLabels"].items())


@pytest.mark.parametrize("version", SIDECAR_SCHEMA_VERSIONS)
def test_sidecar_example_matches_the_kubernetes_schema(version):
    for doc in _load_all(SIDECAR / "deployment.yaml"):
        _validate_strictly(doc, version, "unix-socket-sidecar")


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed: cannot render kustomize")
def test_sidecar_example_renders_as_written():
    assert _render("examples/unix-socket-sidecar") == _load_all(SIDECAR / "deployment.yaml")


def test_sidecar_example_runs_as_written(tmp_path):
    """The example's server command line, probe and application script, run here with the
    paths mapped onto this checkout (the image's /opt/bert/models is the repository's
    models/, the socket's directory a scratch one, metrics on loopback): the probe fails
    before the server is up and passes once it serves; the script's call is answered;
    SIGTERM drains the server, which removes its socket."""
    _, _, server, app = _sidecar_pod()
    address = _arg(server["args"], "address")
    socket = tmp_path / "run" / "bert.sock"
    socket.parent.mkdir()
    model_dir = _arg(server["args"], "model_dir")
    local_model = REPO / "models" / model_dir[len("/opt/bert/models/"):]
    if not local_model.is_dir():
        pytest.skip(f"{local_model} is absent (tools/setup.sh fetches it)")

    def local(arg):
        if arg.startswith("--metrics_address="):
            return "--metrics_address=127.0.0.1:0"
        return arg.replace(address, f"unix:{socket}").replace(model_dir, str(local_model))

    args = [local(a) for a in server["args"]]
    assert f"--address=unix:{socket}" in args and f"--model_dir={local_model}" in args
    probe = [bin_path("client", "bert_client")] + [
        local(a) for a in server["startupProbe"]["exec"]["command"][1:]]
    before = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    assert before.returncode != 0, before.stdout + before.stderr

    proc = subprocess.Popen([bin_path("server", "bert_server"), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            r = subprocess.run(probe, capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                break
            assert time.time() < deadline, r.stdout + r.stderr
            time.sleep(0.2)
        assert r.stdout.strip() == "SERVING"

        # The application's script, with `bert_client` from this build and a `sleep` that
        # ends the loop after its first round.
        stub_bin = tmp_path / "stub_bin"
        stub_bin.mkdir()
        (stub_bin / "bert_client").symlink_to(bin_path("client", "bert_client"))
        (stub_bin / "sleep").write_text("#!/bin/sh\nkill -TERM \"$PPID\"\n")
        (stub_bin / "sleep").chmod(0o755)
        env = {e["name"]: local(e["value"]) for e in app["env"]}
        env["PATH"] = f"{stub_bin}:{os.environ['PATH']}"
        r = subprocess.run([*app["command"], app["args"][0]], capture_output=True, text=True,
                           env=env, timeout=60)
        assert r.returncode == -signal.SIGTERM, (r.returncode, r.stdout, r.stderr)
        assert "Pooled Outputs Shape:(1, 384)" in r.stdout, r.stdout + r.stderr

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not socket.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
