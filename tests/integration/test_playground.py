"""The browser playground in a real browser (Debian's headless Chromium, driven by selenium through
Debian's chromedriver) against the one-process server with the tiny model and an API key.

Screenshots of the main states go to the test's folder, and to ``HSA_SCREENSHOTS_DIR`` when set;
README's picture (docs/images/playground.png) is the compare state's, ``playground-compare.png``.
"""

import os
import time
from pathlib import Path

import httpx
import pytest

from jobs.settings import hash_api_key
from tests.services import Process, free_port, hsa_video_command, require_binary, service_env, wait_until

API_KEY = "sk-playground-test"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("playground")
    port = free_port()
    process = Process(hsa_video_command("serve", "--port", str(port)), folder / "serve.log",
                      env=service_env(data_dir=str(folder / "data"), api_key_sha256=hash_api_key(API_KEY)))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(url + "/readyz", timeout=2).status_code == 200, 180, "the server ready", process)
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = require_binary("chromium")
    # no background networking: this machine's closed network refuses it, many connections at a time
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000", "--autoplay-policy=no-user-gesture-required",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(require_binary("chromedriver", "chromium-driver")), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folders = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("HSA_SCREENSHOTS_DIR"):
        folders.append(Path(os.environ["HSA_SCREENSHOTS_DIR"]))

    def save(name: str, driver) -> None:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(folder / f"playground-{name}.png"))

    return save


def by_id(driver, element_id):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def until(driver, predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; notice: "
                         f"{by_id(driver, 'notice').text!r}; console: {driver.get_log('browser')}")


def history(driver, field: str, selector: str = ".history-item") -> list[str]:
    """One field of every history entry, read in one script: the list is re-rendered as jobs change."""
    return driver.execute_script(
        f"return [...document.querySelectorAll('#history {selector}')].map(e => e.{field});")


def job_state(driver) -> dict | None:
    return driver.execute_script("""
        const job = document.querySelector('#jobs .job');
        if (!job) return null;
        const video = job.querySelector('.job-video');
        return {id: job.dataset.videoId, status: job.querySelector('.job-status').textContent,
                progress: job.querySelector('.progress').getAttribute('aria-valuenow'),
                prompt: job.querySelector('.job-prompt').textContent, meta: job.querySelector('.job-meta').textContent,
                readyState: video.readyState, duration: video.duration, hidden: video.hidden};""")


def type_prompt(driver, text: str) -> None:
    prompt = by_id(driver, "prompt")
    prompt.clear()
    prompt.send_keys(text)


def generate_and_wait(driver, previous_id=None, timeout=120) -> dict:
    by_id(driver, "generate").click()
    until(driver, lambda: (state := job_state(driver)) and state["id"] != previous_id, 30, "a new job")
    return until(driver, lambda: (state := job_state(driver)) and state["readyState"] >= 2 and state, timeout,
                 "the video playable")


def test_the_page_asks_for_a_key_kept_in_this_tab_only(server, browser, shots):
    page = httpx.get(server + "/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    browser.get(server + "/")
    until(browser, lambda: "API key" in by_id(browser, "notice").text, 10, "the key request")
    assert by_id(browser, "key-form").is_displayed()
    by_id(browser, "api-key").send_keys(API_KEY)
    by_id(browser, "key-form").submit()
    until(browser, lambda: by_id(browser, "model").get_attribute("value") == "tiny", 10, "the models listed")
    assert browser.execute_script("return [sessionStorage.getItem('hsa-video-api-key'), localStorage.length]") == \
        [API_KEY, 0]
    assert [option.text for option in css(browser, "#size option")] == ["32x32", "64x64", "128x128", "256x256"]


def test_type_a_prompt_generate_and_watch_it_play(server, browser, shots):
    browser.get(server + "/")  # the key survives a reload of the tab
    until(browser, lambda: by_id(browser, "model").get_attribute("value") == "tiny", 10, "the models listed")
    type_prompt(browser, "a red circle on a striped blue background")
    until(browser, lambda: by_id(browser, "plan").text.startswith("Budget"), 10, "the planner's preview")
    assert "done in" in by_id(browser, "plan").text
    state = generate_and_wait(browser)
    assert state["progress"] == "100" and state["status"] == "completed" and state["duration"] > 0
    assert state["prompt"] == "a red circle on a striped blue background"
    stats = by_id(browser, "jobs").text
    assert "Achieved compute" in stats and "Time: total" in stats
    assert css(browser, ".job-download")[0].get_attribute("href").startswith("blob:")
    until(browser, lambda: state["id"] in history(browser, "dataset.videoId"), 10, "the job in the history")
    shots("main", browser)


def test_a_running_job_can_be_cancelled(server, browser, shots):
    previous = job_state(browser)["id"]
    type_prompt(browser, "a white square moving up on a plain green background")
    browser.execute_script("document.querySelector('details').open = true")
    by_id(browser, "steps").send_keys("100")  # long enough to catch it running
    by_id(browser, "generate").click()
    until(browser, lambda: (state := job_state(browser)) and state["id"] != previous
          and state["status"].startswith(("queued", "in progress")), 30, "the job running")
    css(browser, "#jobs .job .job-cancel")[0].click()
    state = until(browser, lambda: (state := job_state(browser)) and state["status"] == "cancelled" and state, 30,
                  "the job cancelled")
    assert httpx.get(f"{server}/v1/videos/{state['id']}",
                     headers={"Authorization": f"Bearer {API_KEY}"}).json()["status"] == "cancelled"
    by_id(browser, "steps").clear()


def test_an_image_gives_image_to_video(server, browser, shots, tmp_path):
    from PIL import Image

    image = tmp_path / "first-frame.png"
    Image.new("RGB", (64, 64), (240, 240, 240)).save(image)
    previous = job_state(browser)["id"]
    type_prompt(browser, "a white square staying still on a plain red background")
    by_id(browser, "image").send_keys(str(image))
    until(browser, lambda: by_id(browser, "image-preview").is_displayed(), 10, "the preview")
    state = generate_and_wait(browser, previous)
    assert "image-to-video" in state["meta"]
    video = httpx.get(f"{server}/v1/videos/{state['id']}", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert video["image_to_video"] is True
    shots("image-to-video", browser)
    by_id(browser, "image-clear").click()


def test_a_refused_request_shows_the_api_s_message(server, browser, shots):
    type_prompt(browser, "x" * 2001)
    by_id(browser, "generate").click()
    until(browser, lambda: "prompt: at most 2000 characters" in by_id(browser, "notice").text, 20,
          "the API's message")
    shots("error", browser)


def test_the_compare_view_plays_two_budgets_in_step(server, browser, shots):
    type_prompt(browser, "a yellow circle moving right on a checkered purple background")
    by_id(browser, "compare").click()
    until(browser, lambda: by_id(browser, "compare-view").is_displayed(), 180, "the comparison")

    def players():
        return browser.execute_script(
            "return [...document.querySelectorAll('#compare-view video')].map(v => [v.readyState, v.currentTime]);")

    until(browser, lambda: all(ready >= 2 for ready, _ in players()), 30, "both videos playable")
    first = players()
    time.sleep(1.0)
    second = players()
    assert all(later > earlier for (_, earlier), (_, later) in zip(first, second)) or \
        all(later < earlier for (_, earlier), (_, later) in zip(first, second))  # playing (or looped round)
    assert abs(second[0][1] - second[1][1]) < 0.25  # in step
    captions = by_id(browser, "compare-caption-a").text, by_id(browser, "compare-caption-b").text
    assert captions[0].startswith("budget 1.00") and captions[1].startswith("budget 0.25")
    assert browser.execute_script("return document.getElementById('difference').width") > 0
    shots("compare", browser)


def test_a_prompt_is_text_never_markup(server, browser, shots):
    hostile = '<img src=x onerror="window.__injected = 1">a red circle on a plain blue background'
    previous = job_state(browser)["id"]
    type_prompt(browser, hostile)
    generate_and_wait(browser, previous)
    assert job_state(browser)["prompt"] == hostile
    assert not css(browser, "#jobs img, #history img")
    by_id(browser, "history-refresh").click()
    until(browser, lambda: hostile in history(browser, "textContent", ".history-prompt"), 10,
          "the prompt in the history, as text")
    assert browser.execute_script("return window.__injected") is None
    violations = [entry for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]]
    assert violations == []
