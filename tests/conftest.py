import os

import pytest

# Tests share the machine's cores with the services they start (and whatever else runs): a torch
# thread pool as wide as the machine stalls on every busy core, one thread does not.
os.environ.setdefault("OMP_NUM_THREADS", "1")


# layers by folder or file: each starts real processes (a stack, a benchmark run) and takes seconds a test
LAYERS = {
    "integration": ("tests/integration/",),
    "reliability": ("tests/reliability/",),
    "bench": ("tests/cli/test_bench_", "tests/reliability/test_load_bench.py", "tests/models/test_gpu_speed_script.py"),
}


def pytest_collection_modifyitems(config, items):
    root = str(config.rootpath) + "/"
    for item in items:
        path = str(item.path).removeprefix(root)
        for marker, prefixes in LAYERS.items():
            if path.startswith(prefixes):
                item.add_marker(marker)
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def service_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def redis_url(service_dir):
    """A real redis-server on a free loopback port, for the whole session."""
    from tests.services import start_redis

    process, url = start_redis(service_dir)
    yield url
    process.stop()


@pytest.fixture(scope="session")
def s3_endpoint(service_dir):
    """A real S3 HTTP endpoint (moto server) on a free loopback port, for the whole session."""
    from tests.services import start_moto

    process, url = start_moto(service_dir)
    yield url
    process.stop()
