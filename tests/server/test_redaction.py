"""Credentials in URLs never reach a log line or an error message."""

import logging
import subprocess
import sys

import pytest

from jobs.redaction import install_log_redaction, redact


@pytest.mark.parametrize("text, expected", [
    ("redis://:s3cretpw@redis:6379/0", "redis://***@redis:6379/0"),
    ("jobs go through rediss://default:pw@cache.internal:6380/1 now", "jobs go through rediss://***@cache.internal:6380/1 now"),
    ("Could not connect to the endpoint URL: \"http://minio:minio123@minio:9000/videos\"",
     "Could not connect to the endpoint URL: \"http://***@minio:9000/videos\""),
    ("https://ghp_token@github.example/hook", "https://***@github.example/hook"),
    ("https://user:p%40ss@hooks.example/x?next=a@b", "https://***@hooks.example/x?next=a@b"),
    ("http://127.0.0.1:8000/v1/videos and mail@example.com", "http://127.0.0.1:8000/v1/videos and mail@example.com"),
])
def test_user_info_is_redacted_and_nothing_else(text, expected):
    assert redact(text) == expected


def test_every_log_record_is_redacted_whoever_logs_it(caplog):
    install_log_redaction()
    install_log_redaction()  # idempotent
    with caplog.at_level(logging.INFO):
        logging.getLogger("some.library").info("connecting to %s", "redis://:hunter2@redis:6379/0")
        logging.getLogger("hsa.serve").warning("plain %d", 3)
    assert caplog.messages == ["connecting to redis://***@redis:6379/0", "plain 3"]
    assert "hunter2" not in caplog.text


def test_the_cli_redacts_a_refused_setting():
    # pydantic quotes the refused value in its message
    env = {"HSA_WEBHOOK_ALLOWED_NETWORKS": "http://hooks:hunter2@10.0.0.0/8", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "hsa_video.cli", "serve", "--no-worker"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "http://***@10.0.0.0/8" in result.stderr, result.stderr
    assert "hunter2" not in result.stderr + result.stdout
