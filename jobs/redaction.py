"""Credentials out of what the project logs and returns: ``scheme://user:password@host`` → ``scheme://***@host``.

Service URLs carry secrets (``redis://:password@redis:6379/0``, an S3 endpoint or a webhook with
user-info), and libraries put URLs into their exception messages. ``install_log_redaction`` rewrites
every log record as it is created, in this process and the processes it forks, whichever library
logs it.
"""

from __future__ import annotations

import logging
import re

# a URL scheme, then user-info up to the first "@" before the host (no "/", whitespace or quote in it)
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/@\s'\"<>]+@")


def redact(text: str) -> str:
    return _USERINFO.sub(r"\1***@", text)


def install_log_redaction() -> None:
    """Redact every log record's message (formatted with its arguments) from here on; idempotent."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacts", False):
        return

    def redacting_factory(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: the handler reports it as it would have
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return record

    redacting_factory.redacts = True
    logging.setLogRecordFactory(redacting_factory)
