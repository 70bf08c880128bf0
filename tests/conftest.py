import os

import pytest

# Tests run on 2 CPU cores next to other work; keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config, items):
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
