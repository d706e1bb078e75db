"""The deployment files agree with the code, checked offline (no Docker daemon or cluster
here): the dashboard asks only for metrics the programs export, Prometheus scrapes the
ports they serve on, the Kubernetes manifests validate against the API's schemas and
probe /readyz and /healthz, the compose file runs Redis with a password, AOF and
noeviction, and the bot's image carries no torch."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bot.metrics import BotMetrics
from inference.ops import BOT_METRICS_PORT, WORKER_METRICS_PORT
from inference.worker.metrics import WorkerMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
WORKLOADS = {"Deployment", "StatefulSet"}


def exported_names() -> set[str]:
    names: set[str] = set()
    for registry in (BotMetrics().registry, WorkerMetrics().registry):
        for family in registry.collect():
            names.add(family.name)
            names.update(s.name for s in family.samples)
            # Counters are exposed with _total; histograms with _bucket/_sum/_count.
            names.update(
                f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_sum", "_count")
            )
    return names


def test_the_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "palicord.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in expressions for name in re.findall(r"palicord_[a-z_]+", e)}
    assert len(dashboard["panels"]) >= 10 and used
    assert used - exported_names() == set()
    # Every metric family the programs export is on the dashboard somewhere.
    families = {
        f.name for r in (BotMetrics().registry, WorkerMetrics().registry) for f in r.collect()
    }
    shown = {f for f in families if any(name.startswith(f) for name in used)}
    assert shown == families


def test_prometheus_scrapes_the_programs_ports() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets["palicord-bot"] == [f"bot:{BOT_METRICS_PORT}"]
    assert targets["palicord-worker"] == [f"worker:{WORKER_METRICS_PORT}"]


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.slow
def test_kubernetes_manifests_validate_and_probe_the_endpoints() -> None:
    manifests = [m for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for m in load_all(p)]
    for manifest in manifests:  # the API's own schemas, shipped in kubernetes-validate
        kubernetes_validate.validate(manifest, desired_version="1.30.0", strict=True)
    workloads = {m["metadata"]["name"]: m for m in manifests if m["kind"] in WORKLOADS}
    bot = workloads["palicord-bot"]["spec"]["template"]["spec"]
    worker = workloads["palicord-worker"]["spec"]["template"]["spec"]
    for pod, port in ((bot, BOT_METRICS_PORT), (worker, WORKER_METRICS_PORT)):
        [container] = pod["containers"]
        assert [p["containerPort"] for p in container["ports"]] == [port]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    # Long enough for a batch to finish after SIGTERM.
    assert worker["terminationGracePeriodSeconds"] >= 60


def test_compose_runs_redis_safely_and_checks_every_service() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "bot", "worker"}
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
    redis_conf = (DEPLOY / "redis.conf").read_text().split("\n")
    assert "maxmemory-policy noeviction" in redis_conf and "appendonly yes" in redis_conf
    assert any(line.startswith("maxmemory ") for line in redis_conf)  # bounded
    assert "requirepass" in " ".join(services["redis"]["command"])
    assert "${REDIS_PASSWORD" in services["redis"]["environment"]["REDIS_PASSWORD"]
    for name, port in (("bot", BOT_METRICS_PORT), ("worker", WORKER_METRICS_PORT)):
        service = services[name]
        assert f"{port}/readyz" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "${REDIS_PASSWORD}@redis" in service["environment"]["REDIS_URL"]
    [gpu] = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["capabilities"] == ["gpu"]
    assert any("/data/huggingface" in v for v in services["worker"]["volumes"])


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_bot_image_has_no_torch_and_both_images_run_their_program() -> None:
    bot = instructions(DEPLOY / "bot.Dockerfile")
    worker = instructions(DEPLOY / "worker.Dockerfile")
    for steps, command, port in (
        (bot, '["python", "-m", "bot"]', BOT_METRICS_PORT),
        (worker, '["python", "-m", "inference.worker"]', WORKER_METRICS_PORT),
    ):
        assert steps[0][0] == "FROM" and steps[-1] == ("CMD", command)
        assert ("EXPOSE", str(port)) in steps
        assert any(i == "HEALTHCHECK" and f"{port}/healthz" in a for i, a in steps)
    installs = " ".join(a for i, a in bot if i == "RUN")
    assert '".[bot]"' in installs and "torch" not in installs and "worker" not in installs
    assert '".[worker]"' in " ".join(a for i, a in worker if i == "RUN")
    assert "cuda" in worker[0][1]


BOT_ONLY, WORKER_ONLY = "DISCORD_TOKEN", "HF_TOKEN"


def _containers(manifest: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) of every workload in a manifest."""
    out = []
    for doc in yaml.safe_load_all((DEPLOY / "k8s" / manifest).read_text()):
        if doc and doc["kind"] in WORKLOADS:
            spec = doc["spec"]["template"]["spec"]
            out += [(spec, c) for c in spec["containers"]]
    return out


def test_each_program_runs_unprivileged_on_a_read_only_root() -> None:
    worker_image = (DEPLOY / "worker.Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", worker_image, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.findall(r"^USER (\S+)", (DEPLOY / "bot.Dockerfile").read_text(), re.M) == ["nobody"]
    for manifest in ("bot.yaml", "worker.yaml"):
        for pod, container in _containers(manifest):
            assert pod["securityContext"]["runAsNonRoot"] is True, manifest
            assert pod["securityContext"]["runAsUser"] != 0, manifest
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, manifest
            assert sc["readOnlyRootFilesystem"] is True, manifest
            assert sc["capabilities"]["drop"] == ["ALL"], manifest
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, manifest  # writable where Python needs it
    [(_, worker)] = _containers("worker.yaml")
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert {env["HF_HOME"], env["XDG_CACHE_HOME"]} <= mounts  # the caches are volumes


def test_each_program_gets_only_its_own_secrets() -> None:
    [(_, bot)] = _containers("bot.yaml")
    [(_, worker)] = _containers("worker.yaml")
    bot_secrets = {s["secretRef"]["name"] for s in bot["envFrom"]}
    worker_secrets = {s["secretRef"]["name"] for s in worker["envFrom"]}
    assert bot_secrets == {"palicord-bot"} and worker_secrets == {"palicord-worker"}
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    assert compose["bot"]["env_file"] != compose["worker"]["env_file"]
    assert ".env" not in {compose["bot"]["env_file"], compose["worker"]["env_file"]}
    assert WORKER_ONLY not in json.dumps(compose["bot"])
    assert BOT_ONLY not in json.dumps(compose["worker"])
    units = {
        n: (DEPLOY / "systemd" / f"palicord-{n}.service").read_text() for n in ("bot", "worker")
    }
    assert "/etc/palicord/bot.env" in units["bot"] and "bot.env" not in units["worker"]
