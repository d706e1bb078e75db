"""The deployment files agree with the code: the dashboard asks only for metrics the
programs export, and Prometheus scrapes the ports they serve on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from bot.metrics import BotMetrics
from inference.ops import BOT_METRICS_PORT, WORKER_METRICS_PORT
from inference.worker.metrics import WorkerMetrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


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
