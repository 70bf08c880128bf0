"""The torch-free job plumbing the gateway and the workers share.

Neither imports the other: the gateway (``server``) and the workers (``worker``) meet here::

    records.py    JobSpec (the request, immutable), JobRecord (stored state), ModelCard (what a worker serves)
    sla.py        latency SLA → compute budget: plan at submit, at start, while running (pure functions)
    stores/       JobStore: Redis (production) and SQLite (the one-process default, its own queue)
    queues.py     publishing a stored job as a Celery task; the broker's Celery app
    storage.py    ObjectStore: S3 (boto3) or a local directory
    webhooks.py   Standard-Webhooks-signed delivery with retries
    public.py     the OpenAI video and model objects, as the API and webhooks show them
    metrics.py    Prometheus metrics both sides export
    settings.py   HSA_* environment settings
"""
