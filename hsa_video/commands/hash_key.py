"""``hsa-video hash-key``: the SHA-256 digest to put in ``HSA_API_KEY_SHA256`` for an API key."""

from __future__ import annotations

import argparse
import secrets
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", nargs="?", help="the API key (default: generate a new random one)")


def run(args: argparse.Namespace) -> int:
    from jobs.settings import hash_api_key

    key = args.key or "sk-hsa-" + secrets.token_urlsafe(32)
    if not args.key:
        print(f"key:    {key}", file=sys.stderr)
    print(hash_api_key(key))
    return 0
