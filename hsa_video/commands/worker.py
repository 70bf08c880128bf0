"""``hsa-video worker``: serve one model. A Celery worker on queue ``hsa.<model>`` when
``HSA_REDIS_URL`` is set, else the embedded worker on the local SQLite job store.

The model options (``--model``, ``--model-path``, ``--sizes`` …) are ``HSA_*`` settings too
(``HSA_MODEL``, ``HSA_MODEL_PATH``, ``HSA_SIZES`` …): a flag overrides its variable. They reach the
processes that load the model through the environment, so a Celery pool process, its replacement and
``serve``'s embedded worker all read the same values.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

# flag → ServiceSettings field; each is documented in docs/configuration.md under its HSA_ name
MODEL_OPTIONS = ("model", "model_path", "sizes", "num_frames", "device", "dtype", "text_encoder", "kv_cache_dtype",
                 "kv_cache_location", "kv_forecast_layers", "memory_limit_gib", "expert_offload")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the model a worker serves (shared with ``serve``, whose embedded worker takes them)."""
    group = parser.add_argument_group("model (each also an HSA_* variable; see docs/configuration.md)")
    group.add_argument("--model", default=None,
                       help="tiny (default), or a registered model such as wan2.1-t2v-1.3b (HSA_MODEL)")
    group.add_argument("--model-path", default=None,
                       help="the model's local diffusers-format directory (HSA_MODEL_PATH)")
    group.add_argument("--sizes", default=None,
                       help="WIDTHxHEIGHT sizes to serve, comma-separated, e.g. 832x480,480x832 (default: the "
                            "model's preset; HSA_SIZES)")
    group.add_argument("--num-frames", default=None,
                       help="frame counts to serve, comma-separated, e.g. 81 (default: the preset; HSA_NUM_FRAMES)")
    group.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    group.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"],
                       help="transformer and text-encoder dtype (default: bfloat16 on GPU, float32 on CPU)")
    group.add_argument("--text-encoder", default=None, choices=["device", "cpu", "offload"],
                       help="where the text encoder runs: on the device (default), on the CPU, or moved to the "
                            "device for each encoding (HSA_TEXT_ENCODER)")
    group.add_argument("--kv-cache-dtype", default=None,
                       choices=["bfloat16", "float16", "float32", "float8_e4m3fn"],
                       help="dtype of HSA's K/V cache (default: the model's; HSA_KV_CACHE_DTYPE)")
    group.add_argument("--kv-cache-location", default=None, choices=["device", "host"],
                       help="keep HSA's K/V cache on the device (default) or in host memory (HSA_KV_CACHE_LOCATION)")
    group.add_argument("--kv-forecast-layers", type=int, default=None,
                       help="forecast skipped tokens' K/V in the first N layers: better quality below budget 1, "
                            "one more layer of K/V cache each; 999 forecasts every layer (default 0; "
                            "HSA_KV_FORECAST_LAYERS)")
    group.add_argument("--memory-limit-gib", type=float, default=None,
                       help="device memory this worker may use, its model included (HSA_MEMORY_LIMIT_GIB)")
    group.add_argument("--no-expert-offload", dest="expert_offload", action="store_const", const=False, default=None,
                       help="keep both experts of a two-expert model on the device (HSA_EXPERT_OFFLOAD=false)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--concurrency", type=int, default=1,
                        help="Celery worker processes (default 1: one process per GPU)")
    parser.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"],
                        help="Celery pool (default prefork; hard time limits need it)")
    parser.add_argument("--log-level", default="info")


def model_settings(args: argparse.Namespace):
    """The service settings with the command line's model options over the environment's, validated,
    and exported to this process's environment for the processes it starts."""
    from jobs.settings import ServiceSettings

    given = {name: getattr(args, name) for name in MODEL_OPTIONS if getattr(args, name, None) is not None}
    settings = ServiceSettings(**given)  # pydantic's errors name the option and the value
    for name in given:
        value = getattr(settings, name)
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value).lower() \
            if isinstance(value, bool) else str(value)
        os.environ[f"HSA_{name.upper()}"] = text
    return settings


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = model_settings(args)
    from worker.runners import check_model_setup

    check_model_setup(settings)  # a missing or incomplete model directory stops here, in one line
    model = settings.model
    if settings.redis_url:
        from jobs.multiprocess import prepare_multiprocess_dir

        prepare_multiprocess_dir(settings.metrics_dir / f"worker-{model}-{os.getpid()}")
        if settings.worker_metrics_port:
            from prometheus_client import CollectorRegistry, multiprocess, start_http_server

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # every prefork child's metrics, merged
            start_http_server(settings.worker_metrics_port, registry=registry)
        from jobs.queues import queue_name
        from worker.celery_app import app, load_failure_file

        app.worker_main(["worker", "--queues", queue_name(model), "--concurrency", str(args.concurrency),
                         # the pid keeps node names unique when a host runs one worker per GPU
                         "--pool", args.pool, "--hostname", f"{model}-{os.getpid()}@%h",
                         "--loglevel", args.log_level.upper()])
        failure = load_failure_file(settings, os.getpid())
        if failure.exists():  # a pool process could not load the model and stopped the worker
            print(f"hsa-video: error: {model} failed to load: {failure.read_text()}", file=sys.stderr)
            failure.unlink()
            return 2
        return 0

    from worker.embedded import run_embedded_worker

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_embedded_worker(settings, stop)
    return 0
