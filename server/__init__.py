"""The HTTP gateway (FastAPI, OpenAI Videos API) and the torch-free pieces it shares with workers.

It never imports torch or hsa_core (a test guards this), so the gateway image stays slim::

    app.py       build_app(settings): routes for models and health, lifespan that opens the clients
    videos.py    /v1/videos: create, list, retrieve, cancel/delete, download
    schemas.py   VideoCreate validation against a model's limits; the OpenAI video object
    jobs.py      JobSpec (queue message), JobRecord (stored state), ModelCard (worker limits)
    stores/      JobStore: Redis (production) and SQLite (the one-process default)
    queues.py    JobQueue: the Celery task message the store writes with the job, or none (embedded SQLite queue)
    storage.py   ObjectStore: S3 (boto3) or a local directory
    webhooks.py  Standard-Webhooks-signed delivery with retries
    settings.py  HSA_* environment settings
"""

__version__ = "0.1.0"
