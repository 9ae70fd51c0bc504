"""The deployment files: checked by their tools' own validators, and the environment they set
up run for real. No Docker daemon runs here, so the image's environment (its ENV, its
non-root user, its command and health check) and the Compose and Kubernetes node settings
are given to `apiary node` processes on the S3 test server instead of containers."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from typing import Iterator

import pytest
import yaml

from apiary import Apiary
from conftest import REPO, apiary_binary, wait_for

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "deploy" / "docker-compose.yml"
KUBERNETES = REPO / "deploy" / "kubernetes" / "apiary.yaml"
IMAGE_UID = 10001


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"`{name}` is not installed: scripts/test.sh installs the validators")
    return path


def test_dockerfile_passes_hadolint() -> None:
    done = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_file_is_valid() -> None:
    done = subprocess.run([tool("docker-compose"), "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_kubernetes_manifests_are_valid() -> None:
    done = subprocess.run([tool("kubernetes-validate"), "--strict", str(KUBERNETES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") == 4


def final_stage() -> list[str]:
    """The Dockerfile's last stage, one instruction per line (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in final_stage():
        if line.upper().startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def image_instruction(name: str) -> str:
    found = [line for line in final_stage() if line.upper().startswith(name + " ")]
    assert found, f"the image has no {name}"
    return found[-1][len(name) + 1 :].strip()


def test_the_image_runs_apiary_node_as_a_non_root_user() -> None:
    assert image_instruction("USER").split(":")[0] == str(IMAGE_UID)
    assert image_instruction("ENTRYPOINT").endswith('"apiary"]')
    assert image_instruction("CMD") == '["node"]'
    env = image_env()
    assert {"APIARY_STATE_DIR", "APIARY_STATUS_FILE", "APIARY_STORAGE"} <= env.keys()


class Root:
    """A folder standing in for a container's /var/lib/apiary, readable by the image's user."""

    def __init__(self) -> None:
        self.path = pathlib.Path(tempfile.mkdtemp(prefix="apiary-image-", dir="/tmp"))
        self.path.chmod(0o755)
        binary = self.path / "apiary"
        shutil.copy2(apiary_binary(), binary)
        binary.chmod(0o755)
        self.binary = str(binary)

    def container(self, i: int) -> pathlib.Path:
        home = self.path / f"container-{i}"
        home.mkdir()
        if os.geteuid() == 0:
            os.chown(home, IMAGE_UID, IMAGE_UID)
        return home


@pytest.fixture
def root() -> Iterator[Root]:
    r = Root()
    yield r
    shutil.rmtree(r.path, ignore_errors=True)


def ensure_bucket(bucket: str) -> None:
    request = urllib.request.Request(f"{os.environ['AWS_ENDPOINT_URL']}/{bucket}", method="PUT")
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as e:  # 409: it exists already
        assert e.code == 409, e


def run_as_image_user(cmd: list[str], env: dict[str, str], log: pathlib.Path) -> subprocess.Popen:
    if os.geteuid() == 0:
        cmd = ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups", *cmd]
    return subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd="/")


def container_env(home: pathlib.Path, service_env: dict[str, str]) -> dict[str, str]:
    """The image's ENV with /var/lib/apiary at `home`, then the service's environment, with
    MinIO's address replaced by the S3 test server's (which takes the same credentials)."""
    env = {k: v.replace("/var/lib/apiary", str(home)) for k, v in image_env().items()}
    env.update(service_env)
    env["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    env["RUST_LOG"] = "warn"
    return env


def healthy(env: dict[str, str], home: pathlib.Path) -> bool:
    test = re.search(r'CMD \["sh", "-c", "(.*)"\]$', image_instruction("HEALTHCHECK"))
    assert test, "the image's health check is not an exec form `sh -c` command"
    command = test.group(1).replace('\\"', '"').replace("/var/lib/apiary", str(home))
    return subprocess.run(["sh", "-c", command], env=env).returncode == 0


def test_the_compose_topology_runs_as_the_image_would(root: Root, tmp_path: pathlib.Path) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = {name: s for name, s in compose["services"].items() if s.get("image") == "apiary:latest"}
    assert sorted(services) == ["apiary-node-1", "apiary-node-2", "apiary-node-3"]
    storage = services["apiary-node-1"]["environment"]["APIARY_STORAGE"]
    ensure_bucket(storage.removeprefix("s3://").split("/")[0])

    procs, homes, envs = [], [], []
    for i, (name, service) in enumerate(sorted(services.items())):
        home = root.container(i)
        env = container_env(home, {k: str(v) for k, v in service["environment"].items()})
        procs.append(run_as_image_user([root.binary, "node"], env, tmp_path / f"{name}.log"))
        homes.append(home)
        envs.append(env)
    try:
        ids = [
            wait_for(f"node {i}'s id", lambda h=h: (h / "state" / "node_id").exists() and (h / "state" / "node_id").read_text().strip())
            for i, h in enumerate(homes)
        ]
        env = envs[0]
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ[key] = env[key]
        observer = Apiary("client", storage=storage)
        wait_for(
            "the three nodes alive",
            lambda: set(ids) <= {n["node_id"] for n in observer.swarm_status()["nodes"] if n["state"] == "alive"},
            timeout=30,
        )
        for home, env in zip(homes, envs):
            wait_for("the health check to pass", lambda: healthy(env, home), timeout=30)
            # Everything the node wrote locally belongs to the image's user.
            if os.geteuid() == 0:
                assert {p.stat().st_uid for p in home.rglob("*")} == {IMAGE_UID}
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc in procs]
    logs = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log"))
    assert codes == [0, 0, 0], logs
    # SIGTERM made them leave: their heartbeats are gone.
    left = {n["node_id"] for n in observer.swarm_status()["nodes"]}
    assert not set(ids) & left


def test_the_kubernetes_pod_environment_runs(root: Root, tmp_path: pathlib.Path, s3_storage: str) -> None:
    docs = [d for d in yaml.safe_load_all(KUBERNETES.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    config = by_kind["ConfigMap"]["data"]
    secret = by_kind["Secret"]["stringData"]
    container = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["node"]
    limit = container["resources"]["limits"]["memory"]
    assert limit == "2Gi"
    env = {**config, **secret}
    # What the downward API gives: the pod's name, and the memory limit in bytes.
    pod = "apiary-7d9f8c6b5-x2k9z"
    for item in container["env"]:
        source = item["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name"
            env[item["name"]] = pod
        else:
            assert source["resourceFieldRef"]["resource"] == "limits.memory"
            env[item["name"]] = str(2 * 1024**3)
    env["APIARY_STORAGE"] = s3_storage  # the test server's bucket instead of apiary-data
    home = root.container(0)
    proc = run_as_image_user([root.binary, *container["args"]], container_env(home, env), tmp_path / "pod.log")
    try:
        observer = Apiary("client", storage=s3_storage)
        node = wait_for(
            "the pod's node",
            lambda: next((n for n in observer.swarm_status()["nodes"] if n["node_id"] == pod and n["state"] == "alive"), None),
            timeout=30,
        )
        assert node["memory_gb"] == pytest.approx(2.0)
        # The pod's probes answer as the kubelet would ask them, on the console's port.
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        listen = env["APIARY_HTTP"]
        assert listen.endswith(f":{ports['console']}")
        for probe in ("livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            url = f"http://127.0.0.1:{ports[get['port']]}{get['path']}"
            status = wait_for(f"{probe} {url}", lambda: http_status(url) == 200 or None, timeout=30)
            assert status
        # The API itself wants a token (none was created).
        assert http_status(f"http://127.0.0.1:{ports['console']}/api/v1/nodes") == 503
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, (tmp_path / "pod.log").read_text()


def http_status(url: str) -> int | None:
    """The HTTP status of GET url, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None
