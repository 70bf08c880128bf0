import pytest
from pydantic import ValidationError

from jobs.settings import ServiceSettings, hash_api_key


def test_defaults_are_the_one_process_server(monkeypatch):
    for name in ("HSA_REDIS_URL", "HSA_STORAGE", "HSA_API_KEY_SHA256", "HSA_MODEL", "HSA_DEFAULT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    settings = ServiceSettings(_env_file=None)
    assert settings.redis_url is None and settings.storage == "local" and settings.model == "tiny"
    assert settings.default_model is None  # a request without a model gets the one served
    assert settings.api_key_hashes == frozenset()


def test_worker_model_options_read_operator_lists(monkeypatch):
    monkeypatch.setenv("HSA_MODEL", "wan2.1-t2v-1.3b")
    monkeypatch.setenv("HSA_MODEL_PATH", "/weights")
    monkeypatch.setenv("HSA_SIZES", "832x480, 480X832")
    monkeypatch.setenv("HSA_NUM_FRAMES", "81,41")
    monkeypatch.setenv("HSA_EXPERT_OFFLOAD", "false")
    settings = ServiceSettings(_env_file=None)
    assert (settings.model, str(settings.model_path)) == ("wan2.1-t2v-1.3b", "/weights")
    assert settings.sizes == ["832x480", "480x832"] and settings.num_frames == [81, 41]
    assert settings.expert_offload is False


@pytest.mark.parametrize("name, value, message", [
    ("sizes", "832by480", "is not WIDTHxHEIGHT"),
    ("num_frames", "0", "num_frames must be positive"),
    ("text_encoder", "gpu", "text_encoder"),
    ("kv_cache_location", "disk", "kv_cache_location"),
    ("kv_forecast_layers", "-1", "kv_forecast_layers"),
])
def test_worker_model_options_refuse_malformed_values(name, value, message):
    with pytest.raises(ValidationError, match=message):
        ServiceSettings(**{name: value}, _env_file=None)


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
