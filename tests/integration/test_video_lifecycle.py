"""The job lifecycle through the official openai SDK, against both deployments (see conftest)."""

import io
import json
import time

import numpy as np
import openai
import pytest
from PIL import Image

from hsa_core.media import read_mp4, to_uint8
from hsa_video.tiny.domain import render, sample_spec
from tests.services import WebhookReceiver, wait_until

from .conftest import API_KEY, WEBHOOK_SECRET


def decode(content: bytes, tmp_path) -> np.ndarray:
    path = tmp_path / "video.mp4"
    path.write_bytes(content)
    return read_mp4(path).astype(np.float32) / 255.0  # (F, H, W, 3)


def wait_for(client, video_id, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video = client.videos.retrieve(video_id)
        if predicate(video):
            return video
        time.sleep(0.05)
    raise TimeoutError(f"video {video_id} never reached the expected state; last: {video}")


def test_text_to_video_create_and_poll_then_download(deployment, tmp_path):
    client = deployment.client()
    video = client.videos.create_and_poll(
        prompt="a red circle moving left on a plain blue background", model="tiny", size="64x64", seconds="2",
        extra_body={"steps": 8, "seed": 3, "budget": 0.5}, poll_interval_ms=100,
    )
    assert video.status == "completed", (video, deployment.logs())
    assert video.progress == 100 and video.error is None
    assert (video.size, video.seconds, video.model) == ("64x64", "2", "tiny")
    extra = video.model_extra
    assert extra["budget"] == 0.5 and abs(extra["achieved_compute_fraction"] - 0.5) < 0.05
    assert extra["steps"] == 8 and extra["attempts"] == 1
    assert set(extra["timings"]) >= {"queued", "generate", "encode", "upload", "total"}
    assert video.completed_at >= video.created_at and video.expires_at > video.completed_at

    clip = decode(client.videos.download_content(video.id).content, tmp_path)
    assert clip.shape == (16, 64, 64, 3)
    assert clip.std() > 0.05  # a picture, not a blank frame


def test_image_to_video_keeps_the_first_frame(deployment, tmp_path):
    client = deployment.client()
    prompt = "a white triangle moving right on a plain green background"

    def image_to_video(first_frame: np.ndarray) -> np.ndarray:
        png = io.BytesIO()
        Image.fromarray(to_uint8(first_frame)).save(png, format="PNG")
        video = client.videos.create_and_poll(
            prompt=prompt, size="32x32", input_reference=("first.png", png.getvalue(), "image/png"),
            extra_body={"steps": 8, "seed": 1}, poll_interval_ms=100,
        )
        assert video.status == "completed", (video, deployment.logs())
        assert video.model_extra["image_to_video"] is True
        clip = decode(client.videos.download_content(video.id).content, tmp_path)
        assert clip.shape == (16, 32, 32, 3)
        return clip

    captioned = render(sample_spec(np.random.default_rng(5)))[0]  # the prompt's own scene, (32, 32, 3) in [0, 1]
    other = render(sample_spec(np.random.default_rng(6)))[0]  # a white square on a purple gradient
    # frame 0 is held clean: only the autoencoder round trip and MP4 coding separate it from the input
    assert np.abs(image_to_video(captioned)[0] - captioned).mean() < 0.05
    # the image, not the prompt or the seed, decides frame 0: same request, another picture
    assert np.abs(image_to_video(other)[0] - other).mean() < 0.05
    t2v = client.videos.create_and_poll(prompt=prompt, size="32x32", extra_body={"steps": 8, "seed": 1},
                                        poll_interval_ms=100)
    assert t2v.model_extra["image_to_video"] is False
    # without an image, frame 0 is the model's own drawing of the prompt: same background, its own triangle
    t2v_first = decode(client.videos.download_content(t2v.id).content, tmp_path)[0]
    assert np.abs(t2v_first - other).mean() > 0.2


def test_cancel_a_running_job_frees_the_worker(deployment):
    client = deployment.client()
    long_job = client.videos.create(prompt="a green square moving up", size="32x32", extra_body={"steps": 100})
    running = wait_for(client, long_job.id, lambda v: v.status == "in_progress" and 0 < v.progress < 90)
    deleted = client.videos.delete(long_job.id)
    assert deleted.deleted is False and deleted.model_extra["status"] == "cancelled"
    cancelled = client.videos.retrieve(long_job.id)
    assert cancelled.status == "cancelled" and cancelled.progress >= running.progress
    time.sleep(0.5)  # a stopped job makes no more progress
    assert client.videos.retrieve(long_job.id).progress == client.videos.retrieve(long_job.id).progress
    with pytest.raises(openai.ConflictError):
        client.videos.download_content(long_job.id)

    started = time.monotonic()
    follow_up = client.videos.create_and_poll(prompt="a red circle", size="32x32", extra_body={"steps": 4},
                                              poll_interval_ms=100)
    assert follow_up.status == "completed"
    # the worker did not finish the 100 steps of the cancelled job first (about 6 s on this CPU)
    assert follow_up.model_extra["timings"]["queued"] < 3.0, deployment.logs()
    assert time.monotonic() - started < 30
    final = client.videos.retrieve(long_job.id)
    assert final.status == "cancelled" and final.progress < 95


def test_deleting_a_finished_video_removes_it(deployment):
    client = deployment.client()
    video = client.videos.create_and_poll(prompt="a red circle", size="32x32", extra_body={"steps": 2},
                                          poll_interval_ms=100)
    assert client.videos.delete(video.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)


def test_idempotent_retry(deployment):
    client = deployment.client()
    key = {"Idempotency-Key": f"retry-{deployment.name}-{time.time()}"}
    body = dict(prompt="a blue circle moving down", size="32x32", extra_body={"steps": 2, "seed": 9})
    first = client.videos.create(**body, extra_headers=key)
    again = client.videos.create(**body, extra_headers=key)
    assert again.id == first.id
    with pytest.raises(openai.ConflictError) as conflict:
        client.videos.create(prompt="a blue circle moving down", size="32x32",
                             extra_body={"steps": 2, "seed": 10}, extra_headers=key)
    assert conflict.value.code == "idempotency_key_reused"
    assert client.videos.poll(first.id, poll_interval_ms=100).status == "completed"


def test_list_paginates_newest_first(deployment):
    client = deployment.client()
    ids = [client.videos.create(prompt=f"a red circle {i}", size="32x32", extra_body={"steps": 1}).id
           for i in range(3)]
    page = client.videos.list(limit=2)
    assert [v.id for v in page.data] == ids[::-1][:2] and page.has_more
    following = page.get_next_page()
    assert following.data[0].id == ids[0]
    everything = [v.id for v in client.videos.list(limit=2)]  # the SDK walks every page
    assert everything[:3] == ids[::-1] and len(everything) == len(set(everything))
    for video_id in ids:
        client.videos.poll(video_id, poll_interval_ms=100)


def test_errors_reach_the_sdk_as_typed_exceptions(deployment):
    with pytest.raises(openai.AuthenticationError):
        deployment.client(api_key="sk-wrong").videos.list()
    client = deployment.client()
    with pytest.raises(openai.NotFoundError) as missing:
        client.videos.retrieve("video_does_not_exist")
    assert missing.value.code == "video_not_found"
    with pytest.raises(openai.NotFoundError) as unknown_model:
        client.videos.create(prompt="x", model="sora-2")
    assert "tiny" in unknown_model.value.message
    with pytest.raises(openai.UnprocessableEntityError) as bad_size:
        client.videos.create(prompt="x", size="720x1280")
    assert bad_size.value.param == "size"
    with pytest.raises(openai.UnprocessableEntityError) as bad_budget:
        client.videos.create(prompt="x", extra_body={"budget": 2})
    assert bad_budget.value.param == "budget"
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_signed_webhook_on_completion(deployment):
    receiver = WebhookReceiver()
    try:
        client = deployment.client()
        video = client.videos.create(prompt="a red circle", size="32x32",
                                     extra_body={"steps": 2, "webhook_url": receiver.url})
        assert receiver.arrived.wait(60), deployment.logs()
        headers, body = receiver.requests[0]
        event = client.webhooks.unwrap(body, headers, secret=WEBHOOK_SECRET)  # raises if the signature is wrong
        assert event.type == "video.completed"
        payload = json.loads(body)
        assert payload["data"]["id"] == video.id and payload["data"]["status"] == "completed"
        delivered = wait_for(client, video.id, lambda v: v.model_extra.get("webhook"))
        assert delivered.model_extra["webhook"]["delivered"] is True
    finally:
        receiver.close()


def test_api_key_is_not_needed_for_health(deployment):
    import httpx

    assert httpx.get(deployment.base_url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(deployment.base_url + "/v1/videos").status_code == 401
    assert httpx.get(deployment.base_url + "/v1/videos", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_interactive_jobs_overtake_queued_batch_jobs(deployment):
    client = deployment.client()
    blocker = client.videos.create(prompt="a red circle", size="32x32",
                                   extra_body={"steps": 60, "budget": 1.0, "tier": "batch"})
    wait_for(client, blocker.id, lambda v: v.status == "in_progress")
    batch = [client.videos.create(prompt="a blue square", size="32x32",
                                  extra_body={"steps": 4, "budget": 1.0, "tier": "batch"}).id for _ in range(3)]
    urgent = client.videos.create(prompt="a green circle", size="32x32",
                                  extra_body={"steps": 4, "tier": "interactive"})
    assert urgent.model_extra["tier"] == "interactive"
    finished = {video_id: client.videos.poll(video_id, poll_interval_ms=100) for video_id in [urgent.id, *batch]}
    started = {video_id: video.model_extra["started_at"] for video_id, video in finished.items()}
    assert started[urgent.id] < min(started[video_id] for video_id in batch), deployment.logs()
    assert finished[urgent.id].model_extra["sla_met"] is True


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples, name, **labels) -> float:
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items()))


def test_metrics_contract(deployment):
    """After two jobs through the real stack, every documented metric is exported, with the right counts."""
    import re
    from pathlib import Path

    gateway_url, worker_url = deployment.base_url + "/metrics", deployment.worker_metrics_url
    before_gateway, before_worker = scrape(gateway_url), scrape(worker_url)
    client = deployment.client()
    videos = [client.videos.create_and_poll(prompt="a red circle", size="32x32",
                                            extra_body={"steps": 20, "budget": budget}, poll_interval_ms=100)
              for budget in (1.0, 0.5)]
    assert [video.status for video in videos] == ["completed", "completed"]
    with pytest.raises(openai.UnprocessableEntityError):
        client.videos.create(prompt="x", size="1x1")
    # the deployments sample every reduced-budget job for a shadow reference (HSA_SHADOW_SAMPLE_RATE=1)
    shadowed = wait_for(client, videos[1].id, lambda v: v.model_extra["shadow_reference"] is not None)
    assert 10 < shadowed.model_extra["shadow_reference"]["psnr_db"] < 100
    assert client.videos.retrieve(videos[0].id).model_extra["shadow_reference"] is None  # full budget: no shadow
    gateway = scrape(gateway_url)

    def worker_counted_both_jobs_and_the_shadow():
        # the store and the metrics are two writes, in either order and possibly by different processes
        # (a job is counted just after it is stored as completed; a shadow run on another pool process
        # may finish first): wait for the counters to catch up, then check them exactly
        samples = scrape(worker_url)
        jobs = {"model": "tiny", "status": "completed"}
        shadows = {"model": "tiny", "outcome": "completed"}
        counted = total(samples, "hsa_jobs_finished_total", **jobs) - total(before_worker, "hsa_jobs_finished_total", **jobs)
        shadowed = total(samples, "hsa_shadow_runs_total", **shadows) - total(before_worker, "hsa_shadow_runs_total",
                                                                              **shadows)
        return samples if counted >= 2 and shadowed >= 1 else None

    worker = wait_until(worker_counted_both_jobs_and_the_shadow, 10, "the worker counting both jobs and the shadow")

    documented = set(re.findall(r"^\| `(hsa_[a-z_]+)`", (Path(__file__).parents[2] / "docs" / "operations.md").read_text(), re.M))
    exported = {name for name, _ in [*gateway, *worker]}
    missing = {name for name in documented
               if not any(e == name or e.startswith(name + "_") for e in exported)}
    assert not missing, missing

    def delta(samples, before, name, **labels):
        return total(samples, name, **labels) - total(before, name, **labels)

    assert delta(gateway, before_gateway, "hsa_video_submissions_total", model="tiny") == 2
    assert delta(gateway, before_gateway, "hsa_video_rejections_total", reason="invalid_size") == 1
    assert delta(gateway, before_gateway, "hsa_http_requests_total", route="/v1/videos", method="POST",
                 status="200") == 2
    assert delta(worker, before_worker, "hsa_jobs_finished_total", model="tiny", status="completed") == 2
    assert delta(worker, before_worker, "hsa_job_stage_seconds_count", model="tiny", stage="total") == 2
    assert delta(worker, before_worker, "hsa_budget_count", model="tiny", kind="chosen") == 2
    assert delta(worker, before_worker, "hsa_token_steps_total", model="tiny", kind="skipped") > 0
    assert total(gateway, "hsa_live_workers", model="tiny") == 1
    assert delta(worker, before_worker, "hsa_shadow_runs_total", model="tiny", outcome="completed") == 1
    assert delta(worker, before_worker, "hsa_shadow_psnr_db_count", model="tiny", budget_bucket="0.5") == 1


def test_a_real_prometheus_scrapes_the_stack_and_evaluates_the_dashboard_and_alerts(deployment, tmp_path):
    """prometheus (the Debian package) scrapes the gateway and the worker on loopback every second;
    its query API then returns the jobs we ran, and every dashboard query and alert rule evaluates."""
    import shutil
    from pathlib import Path
    from urllib.parse import urlsplit

    import httpx
    import yaml

    from tests.services import Process, free_port, require_binary

    binary = require_binary("prometheus")
    deploy = Path(__file__).parents[2] / "deploy"
    targets = {"hsa-gateway": urlsplit(deployment.base_url).netloc}
    if deployment.worker_metrics_url != deployment.base_url + "/metrics":
        targets["hsa-worker"] = urlsplit(deployment.worker_metrics_url).netloc
    shutil.copy(deploy / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": ["alerts.yml"],
              "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                                 for job, target in targets.items()]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    prometheus = Process([binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                          f"--web.listen-address=127.0.0.1:{port}"], tmp_path / "prometheus.log")
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(expr: str) -> list:
        body = httpx.get(api + "/query", params={"query": expr}, timeout=10).json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    try:
        wait_until(lambda: len(query("up == 1")) == len(targets), 60, "prometheus scraping every target", prometheus)
        client = deployment.client()
        before = sum(float(r["value"][1]) for r in query('hsa_jobs_finished_total{status="completed"}'))
        for budget in (1.0, 0.5, 0.5):
            assert client.videos.create_and_poll(prompt="a blue square moving up", size="32x32", poll_interval_ms=100,
                                                 extra_body={"steps": 12, "budget": budget}).status == "completed"

        def completed_in_prometheus() -> bool:
            results = query('sum(hsa_jobs_finished_total{model="tiny", status="completed"})')
            return results and float(results[0]["value"][1]) >= before + 3
        wait_until(completed_in_prometheus, 30, "prometheus to see the three jobs", prometheus)
        wait_until(lambda: query('sum(hsa_shadow_psnr_db_count{model="tiny"}) >= 2'), 60,
                   "prometheus to see the shadow references", prometheus)
        psnr = query('sum(hsa_shadow_psnr_db_sum) / sum(hsa_shadow_psnr_db_count)')
        assert 10 < float(psnr[0]["value"][1]) < 100
        assert query('sum by (model) (hsa_live_workers)')[0]["metric"]["model"] == "tiny"

        dashboard = json.loads((deploy / "grafana" / "dashboards" / "hsa-video.json").read_text())
        expressions = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
        assert expressions and all(isinstance(query(expr), list) for expr in expressions)
        # the stage latency panel has data: rates over the scrapes that saw the jobs finish
        assert query(expressions[0]), expressions[0]

        def rules_evaluated() -> list:
            groups = httpx.get(api + "/rules", timeout=10).json()["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return rules if rules and all(rule.get("lastEvaluation", "").startswith("20") for rule in rules) else []
        rules = wait_until(rules_evaluated, 30, "every alert rule evaluated", prometheus)
        assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    finally:
        prometheus.stop()
