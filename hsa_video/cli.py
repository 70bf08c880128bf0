"""``hsa-video``: the project's command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``;
modules import torch and diffusers inside ``run`` only, so ``hsa-video --help`` answers instantly.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

# (command path, module, help)
COMMANDS = [
    (("serve",), "hsa_video.commands.serve", "run the API server (one process tree with the tiny model by default)"),
    (("worker",), "hsa_video.commands.worker", "run a worker for one model (Celery when HSA_REDIS_URL is set)"),
    (("hash-key",), "hsa_video.commands.hash_key", "print the SHA-256 digest of an API key for HSA_API_KEY_SHA256"),
    (("generate",), "hsa_video.commands.generate", "generate a clip: the built-in tiny model, or a local Wan checkpoint (--model)"),
    (("train-tiny",), "hsa_video.commands.train_tiny", "train (or resume training) the built-in tiny model"),
    (("eval-tiny",), "hsa_video.commands.eval_tiny", "score the tiny model with the automatic checker"),
    (("bench", "speed"), "hsa_video.benchmarks.speed", "time plain Euler vs HSA at several budgets"),
    (("bench", "pareto"), "hsa_video.benchmarks.pareto", "quality vs wall time: HSA, ablations and baselines"),
    (("bench", "reliability"), "hsa_video.benchmarks.reliability",
     "faults injected, fuzzing and load on the production stack (source checkout)"),
    (("bench", "sla"), "hsa_video.benchmarks.sla", "deadline attainment under Poisson load: fixed vs SLA budgets"),
]


def _version() -> str:
    try:
        return metadata.version("hsa-video")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hsa-video",
        description="Video diffusion transformer inference with Heterogeneous Step Allocation (HSA).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, module_name, help_text in COMMANDS:
        if len(path) == 2 and path[0] not in groups:
            group = top.add_parser(path[0], help="run a benchmark and write its report")
            groups[path[0]] = group.add_subparsers(dest="subcommand", metavar="BENCHMARK")
        owner = top if len(path) == 1 else groups[path[0]]
        sub = owner.add_parser(path[-1], help=help_text, description=help_text)
        importlib.import_module(module_name).add_arguments(sub)
        sub.set_defaults(module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "module"):
        parser.print_help()
        return 0 if args.command is None else 2
    from jobs.redaction import install_log_redaction, redact

    install_log_redaction()  # before any command logs: service URLs carry passwords
    try:
        return importlib.import_module(args.module).run(args)
    except Exception as error:
        # hsa_core's typed errors, matched by name: importing hsa_core would import torch, which the
        # gateway image does not have
        if any(cls.__name__ == "HSAError" for cls in type(error).__mro__):
            print(f"hsa-video: error [{error.code}]: {redact(str(error))}", file=sys.stderr)
            return 2
        if isinstance(error, (FileNotFoundError, ValueError)):
            print(f"hsa-video: error: {redact(str(error))}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
