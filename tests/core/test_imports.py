"""Layering: hsa_core stays free of web/queue code; the gateway stays free of torch."""

import subprocess
import sys
from pathlib import Path

import pytest


def modules_after_import(package: str) -> set[str]:
    code = f"import sys, {package}; print('\\n'.join(sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(output.split())


@pytest.mark.parametrize("forbidden", ["fastapi", "starlette", "celery", "redis", "boto3", "botocore", "diffusers"])
def test_hsa_core_imports_no_service_code_or_diffusers(forbidden):
    assert not {m for m in modules_after_import("hsa_core") if m.split(".")[0] == forbidden}


GATEWAY_MODULES = "server.app, server.videos, jobs.stores.redis_store, jobs.stores.sqlite_store, jobs.queues, " \
                  "jobs.storage, jobs.webhooks"


def test_server_imports_no_torch_or_hsa_core():
    # everything the gateway process loads, both deployments
    loaded = {m.split(".")[0] for m in modules_after_import(GATEWAY_MODULES)}
    assert "fastapi" in loaded  # the probe really imported the gateway
    assert "torch" not in loaded and "hsa_core" not in loaded and "worker" not in loaded


JOBS_MODULES = "jobs.records, jobs.sla, jobs.queues, jobs.storage, jobs.webhooks, jobs.public, jobs.metrics, " \
               "jobs.settings, jobs.stores.redis_store, jobs.stores.sqlite_store, jobs.multiprocess"


def test_shared_job_plumbing_imports_neither_side():
    loaded = {m.split(".")[0] for m in modules_after_import(JOBS_MODULES)}
    assert "pydantic" in loaded
    assert not loaded & {"torch", "hsa_core", "fastapi", "starlette", "server", "worker"}


def test_workers_import_no_gateway():
    loaded = {m.split(".")[0] for m in modules_after_import("worker.celery_app, worker.pipeline, worker.embedded")}
    assert "celery" in loaded and not loaded & {"fastapi", "starlette", "server"}


def test_installed_code_imports_no_tests():
    # tests import the installed packages, never the other way round
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    offenders = [str(path.relative_to(root)) for package in ("hsa_core", "hsa_video", "jobs", "server", "worker")
                 for path in (root / package).rglob("*.py")
                 if any(line.lstrip().startswith(("from tests", "import tests"))
                        for line in path.read_text().splitlines())]
    assert offenders == []


def test_public_api_is_curated():
    import hsa_core

    assert sorted(hsa_core.__all__) == hsa_core.__all__
    for name in hsa_core.__all__:
        assert hasattr(hsa_core, name), name


def test_unknown_adapter_lists_the_known_ones():
    from hsa_core import UnknownAdapterError, get_adapter_class

    with pytest.raises(UnknownAdapterError, match="unknown adapter 'ltx9'; known adapters: gaussian, ltx2, wan") as error:
        get_adapter_class("ltx9")
    assert error.value.code == "unknown_adapter"
    assert get_adapter_class("wan").__name__ == "WanAdapter"


def test_the_gateway_commands_run_without_torch():
    # the slim gateway image has no torch: block it and run the CLI's gateway-side commands
    code = ("import sys; sys.modules['torch'] = None\n"
            "from hsa_video.cli import main, build_parser\n"
            "assert main(['hash-key', 'sk-x']) == 0\n"
            "build_parser().parse_args(['serve', '--port', '1'])\n"
            "import server.app, jobs.metrics, jobs.queues, jobs.stores.redis_store\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# Imports inside functions (the lazy ones that keep start-up and the gateway light) run only on their
# code path; a module moved or renamed breaks them silently until a user walks that path.
PROJECT_PACKAGES = ("hsa_core", "hsa_video", "jobs", "server", "worker")
RESOLVE_EVERY_IMPORT = """
import ast, importlib, pathlib, sys
packages = sys.argv[1:]
broken = []
for package in packages:
    for path in sorted(pathlib.Path(package).rglob("*.py")):
        parts = path.with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        anchor = module if parts[-1] == "__init__" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            name = "." * node.level + (node.module or "")
            if not node.level and name.split(".")[0] not in packages:
                continue  # third-party: optional extras are allowed to be missing
            try:
                target = importlib.import_module(name, anchor)
            except ImportError as error:
                if getattr(error, "name", "") and error.name.split(".")[0] not in packages:
                    continue  # one of our modules needs a missing optional extra
                broken.append(f"{path}:{node.lineno} {name}: {error}")
                continue
            for alias in node.names:
                if alias.name != "*" and not hasattr(target, alias.name):
                    try:
                        importlib.import_module(f"{target.__name__}.{alias.name}")
                    except ImportError:
                        broken.append(f"{path}:{node.lineno} {name} has no {alias.name}")
print("\\n".join(broken))
"""


def test_every_import_in_the_project_resolves():
    result = subprocess.run([sys.executable, "-c", RESOLVE_EVERY_IMPORT, *PROJECT_PACKAGES], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
