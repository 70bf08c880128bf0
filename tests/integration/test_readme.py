"""README's examples run as written: its curl block and its openai SDK block, read from README.md itself,
against the one-process server `./scripts/serve` starts (open mode, the tiny model). The only edit is
the address: the test's server listens on a free port, not 8000."""

import re
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from hsa_core.media import read_mp4
from tests.services import ROOT, Process, free_port, hsa_video_command, service_env, wait_until

README_URL = "http://127.0.0.1:8000"


def readme_block(heading: str, language: str) -> str:
    """The first ``language`` code block after ``heading`` in README.md."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    return re.search(rf"```{language}\n(.*?)```", section, re.S)[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    port, metrics_port = free_port(), free_port()
    process = Process(hsa_video_command("serve", "--port", str(port)), folder / "serve.log",
                      env=service_env(data_dir=str(folder / "data"), metrics_port=str(metrics_port)))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(url + "/readyz", timeout=2).status_code == 200, 180, "the server ready", process)
        yield url, metrics_port, folder, process
    finally:
        process.stop()


@pytest.fixture
def workdir(tmp_path):
    Image.new("RGB", (200, 150), (60, 180, 70)).save(tmp_path / "frame.png")  # the README's "any PNG of yours"
    return tmp_path


def test_the_readme_curl_block_runs_as_written(server, workdir):
    url, _, _, process = server
    script = readme_block("### Call it with curl", "bash")
    assert README_URL in script
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script.replace(README_URL, url)], cwd=workdir,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + process.tail()
    frames = read_mp4(workdir / "clip.mp4")
    assert frames.shape == (16, 128, 128, 3)
    background = frames[0, :8].reshape(-1, 3).mean(axis=0)  # the prompt's blue stripes dominate the top rows
    assert background[2] > background[0]
    outputs = result.stdout
    assert '"object":"video.deleted"' in outputs and '"id":"tiny"' in outputs
    i2v = re.findall(r'"id":"(video_[0-9a-f]+)"', outputs)
    assert len(set(i2v)) >= 2  # the text-to-video job and the image-to-video one


def test_the_readme_sdk_block_runs_as_written(server, workdir):
    url, _, _, process = server
    code = readme_block("### Call it with the official openai SDK", "python")
    assert README_URL in code and "…" not in code  # the placeholder key once stopped the SDK before sending
    result = subprocess.run([sys.executable, "-c", code.replace(README_URL, url)], cwd=workdir,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + process.tail()
    lines = result.stdout.splitlines()
    assert lines[0].startswith("completed 0.") and lines[-1] == "completed"
    assert "Model(id='tiny'" in result.stdout or "id='tiny'" in result.stdout
    assert np.asarray(read_mp4(workdir / "clip.mp4")).shape[0] == 16


def test_metrics_leave_the_api_port_when_given_their_own(server):
    url, metrics_port, _, _ = server
    assert httpx.get(url + "/metrics").status_code == 404
    scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
    assert scraped.status_code == 200
    assert "hsa_live_workers" in scraped.text and "hsa_jobs_finished_total" in scraped.text  # gateway's and worker's
