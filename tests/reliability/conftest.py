import pytest

from tests.services import require_binary


@pytest.fixture(scope="session", autouse=True)
def redis_server_installed():
    """Every stack here starts a redis-server: skip without one (fail under CI)."""
    require_binary("redis-server")
