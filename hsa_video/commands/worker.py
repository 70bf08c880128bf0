"""``hsa-video worker``: serve one model. A Celery worker on queue ``hsa.<model>`` when
``HSA_REDIS_URL`` is set, else the embedded worker on the local SQLite job store."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model to serve (default HSA_DEFAULT_MODEL, tiny)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="Celery worker processes (default 1: one process per GPU)")
    parser.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"],
                        help="Celery pool (default prefork; hard time limits need it)")
    parser.add_argument("--log-level", default="info")


def run(args: argparse.Namespace) -> int:
    from server.settings import ServiceSettings

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServiceSettings()
    model = args.model or settings.default_model
    from worker.runners import RUNNERS

    if model not in RUNNERS:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(sorted(RUNNERS))}")
    if settings.redis_url:
        os.environ["HSA_WORKER_MODEL"] = model  # read by each worker process when it loads the model
        from server.multiprocess import prepare_multiprocess_dir

        prepare_multiprocess_dir(settings.metrics_dir / f"worker-{model}-{os.getpid()}")
        if settings.worker_metrics_port:
            from prometheus_client import CollectorRegistry, multiprocess, start_http_server

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # every prefork child's metrics, merged
            start_http_server(settings.worker_metrics_port, registry=registry)
        from server.queues import queue_name
        from worker.celery_app import app

        app.worker_main(["worker", "--queues", queue_name(model), "--concurrency", str(args.concurrency),
                         # the pid keeps node names unique when a host runs one worker per GPU
                         "--pool", args.pool, "--hostname", f"{model}-{os.getpid()}@%h",
                         "--loglevel", args.log_level.upper()])
        return 0

    from worker.embedded import run_embedded_worker

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_embedded_worker(settings, model, stop)
    return 0
