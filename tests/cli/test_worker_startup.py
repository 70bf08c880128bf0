"""A worker (or ``serve``'s embedded one) asked to serve a model it cannot load stops at start with one
line that names the path and what is wrong, before any weights load or any service starts."""

import shutil
import subprocess

import pytest

from tests.models.checkpoints import write_checkpoint
from tests.services import hsa_video_command, service_env

WAN = "wan2.1-t2v-1.3b"


@pytest.fixture(scope="module")
def directories(tmp_path_factory):
    root = tmp_path_factory.mktemp("model-directories")
    wan = write_checkpoint(WAN, root / "wan")
    incomplete = root / "incomplete"
    shutil.copytree(wan, incomplete)
    for weights in (incomplete / "transformer").glob("*.safetensors"):
        weights.unlink()  # an interrupted download
    return {"missing": root / "nowhere", "incomplete": incomplete,
            "other family": write_checkpoint("ltx-2", root / "ltx")}


def run(*args, **settings) -> subprocess.CompletedProcess:
    return subprocess.run(hsa_video_command(*args), capture_output=True, text=True, timeout=300,
                          env=service_env(**settings))


@pytest.mark.parametrize("case, says", [
    ("missing", "no model directory at {path}: put the diffusers-format weights of wan2.1-t2v-1.3b there, e.g. "
                "`huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers --local-dir {path}`"),
    ("incomplete", "{path}: transformer/ has no weights (*.safetensors) (an incomplete download?)"),
    ("other family", "{path} holds a LTX2Pipeline checkpoint, but wan2.1-t2v-1.3b needs a WanPipeline"),
])
def test_a_worker_exits_at_start_with_one_line_naming_the_path(directories, case, says, tmp_path):
    path = directories[case]
    result = run("worker", "--model", WAN, "--model-path", str(path), data_dir=str(tmp_path))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hsa-video: error [model_not_found]: ")
    assert says.format(path=path) in lines[0]


def test_a_celery_worker_and_the_one_process_server_check_the_directory_first(directories, tmp_path):
    path = directories["incomplete"]
    # HSA_REDIS_URL names no running Redis: the check comes before the worker would ever connect
    celery = run("worker", "--model", WAN, "--model-path", str(path), redis_url="redis://127.0.0.1:9/0",
                 data_dir=str(tmp_path))
    serve = run("serve", "--port", "0", "--model", WAN, "--model-path", str(path), data_dir=str(tmp_path))
    for result in (celery, serve):
        assert result.returncode == 2 and "transformer/ has no weights" in result.stderr, result.stderr
    assert not (tmp_path / "jobs.sqlite3").exists()  # serve started nothing


def test_a_served_size_the_model_cannot_make_is_refused_at_start(directories, tmp_path):
    result = run("worker", "--model", WAN, "--model-path", str(directories["incomplete"].parent / "wan"),
                 "--sizes", "64x64,72x64", data_dir=str(tmp_path))
    assert result.returncode == 2
    assert "height and width must be positive multiples of 16, got 64×72" in result.stderr


def test_a_celery_worker_whose_model_fails_to_load_stops_and_says_why(directories, redis_url, tmp_path):
    """The model loads in the pool process, after the directory check: a failure there stops the whole
    worker (it must not take jobs it cannot run) and its exit says why."""
    result = run("worker", "--model", WAN, "--model-path", str(directories["incomplete"].parent / "wan"),
                 "--sizes", "64x64,72x64", redis_url=redis_url, data_dir=str(tmp_path), worker_metrics_port="0")
    assert result.returncode == 2
    assert "wan2.1-t2v-1.3b failed to load: ConfigError: wan2.1-t2v-1.3b: height and width must be positive " \
           "multiples of 16, got 64×72" in result.stdout + result.stderr
