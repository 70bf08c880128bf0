"""``hsa-video serve``: the API gateway; with no broker configured, the whole server in one process tree.

Without ``HSA_REDIS_URL`` it runs the gateway here and an embedded worker as a supervised child
process — the built-in tiny model on the CPU by default, or any registered checkpoint
(``--model wan2.1-t2v-1.3b --model-path DIR``) — sharing a SQLite job store and a local object
directory under ``HSA_DATA_DIR`` (default ./hsa-data). With ``HSA_REDIS_URL`` it runs only the
gateway; start workers with ``hsa-video worker``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from .supervision import WorkerSupervisor

log = logging.getLogger("hsa.serve")

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .worker import add_model_arguments

    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 in containers)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-worker", action="store_true", help="run only the gateway, even without a broker")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--no-access-log", action="store_true",
                        help="no log line per HTTP request (formatting it is a good part of a request's CPU); for "
                             "deployments whose proxy or load balancer keeps the access log")
    parser.add_argument("--workers", type=int, default=1,
                        help="gateway processes sharing the port, each on its own SO_REUSEPORT socket (default 1; "
                             "needs HSA_REDIS_URL when above 1)")
    add_model_arguments(parser)  # the embedded worker's


def _exit_gracefully(signum, frame) -> None:
    raise SystemExit(0)


def run(args: argparse.Namespace) -> int:
    from jobs.multiprocess import prepare_multiprocess_dir
    from jobs.redaction import redact
    from jobs.settings import ServiceSettings

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServiceSettings()
    # before prometheus_client is imported; the embedded worker inherits it, so /metrics shows both
    prepare_multiprocess_dir(settings.metrics_dir / "gateway")

    import uvicorn

    from server.app import build_app

    from .gateway_pool import GatewayPool

    supervisor = None
    if settings.redis_url is None and not args.no_worker:
        from worker.runners import check_model_setup

        from .worker import model_settings

        worker_settings = model_settings(args)  # exported: the embedded worker reads the same values
        check_model_setup(worker_settings)  # a bad model directory stops here, before anything starts
        settings = worker_settings  # the gateway queues jobs for the embedded worker's model while it starts
        supervisor = WorkerSupervisor([sys.executable, "-m", "hsa_video.cli", "worker",
                                       "--log-level", args.log_level]).start()
        log.info("one-process mode: embedded %s worker, jobs in %s", worker_settings.model,
                 settings.database_path.resolve())
    elif settings.redis_url:
        log.info("gateway mode: jobs go through %s; start workers with `hsa-video worker`",
                 redact(settings.redis_url))
    if settings.metrics_port is not None:  # one server for every gateway process (and the embedded worker)
        from jobs import metrics
        from jobs.settings import open_job_store_for

        metrics.serve_on_port(settings.metrics_port, open_job_store_for(settings), args.host)
        log.info("metrics on port %d (not on the API's)", settings.metrics_port)
    try:
        if args.workers > 1:
            if settings.redis_url is None:
                raise ValueError("--workers above 1 needs HSA_REDIS_URL: the one-process mode has one gateway")
            # each process builds its own app (and clients) from the same HSA_* settings, on its own
            # SO_REUSEPORT socket: uvicorn's --workers shares one, and connections pile onto one process
            GatewayPool(args.host, args.port, args.workers, args.log_level, not args.no_access_log).run()
        else:
            # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the handler it
            # found: the default one would end this process there, before the `finally` below stops the
            # embedded worker (orphaned, it would keep running); this one exits through it
            signal.signal(signal.SIGTERM, _exit_gracefully)
            uvicorn.run(build_app(settings), host=args.host, port=args.port, log_level=args.log_level,
                        access_log=not args.no_access_log)
    finally:
        if supervisor is not None:
            supervisor.stop()
    return 0
