import pytest
from pydantic import ValidationError

from server.settings import ServiceSettings, hash_api_key


def test_defaults_are_the_one_process_server(monkeypatch):
    for name in ("HSA_REDIS_URL", "HSA_STORAGE", "HSA_API_KEY_SHA256"):
        monkeypatch.delenv(name, raising=False)
    settings = ServiceSettings(_env_file=None)
    assert settings.redis_url is None and settings.storage == "local" and settings.default_model == "tiny"
    assert settings.api_key_hashes == frozenset()


def test_environment_variables_are_read(monkeypatch):
    monkeypatch.setenv("HSA_REDIS_URL", "redis://cache:6379/1")
    monkeypatch.setenv("HSA_API_KEY_SHA256", f"{hash_api_key('a')}, {hash_api_key('b').upper()}")
    settings = ServiceSettings(_env_file=None)
    assert settings.redis_url == "redis://cache:6379/1"
    assert settings.api_key_hashes == {hash_api_key("a"), hash_api_key("b")}


def test_production_refuses_an_open_api():
    with pytest.raises(ValidationError, match="production needs HSA_API_KEY_SHA256"):
        ServiceSettings(environment="production", _env_file=None)
    ServiceSettings(environment="production", api_key_sha256=hash_api_key("k"), _env_file=None)


def test_plain_keys_are_refused_in_place_of_digests():
    with pytest.raises(ValidationError, match="SHA-256 hex digests"):
        ServiceSettings(api_key_sha256="sk-my-secret-key", _env_file=None)
