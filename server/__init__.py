"""The HTTP gateway: FastAPI, OpenAI Videos API compatible.

It never imports torch, hsa_core or worker (a test guards this), so the gateway image stays slim; the
job plumbing it shares with workers lives in ``jobs``::

    app.py       build_app(settings): routes for models and health, lifespan that opens the clients
    videos.py    /v1/videos: create, list, retrieve, cancel/delete, download
    schemas.py   VideoCreate and its validation against a model's limits
    auth.py      API keys (hashed) and the ``ApiKey`` dependency
    limits.py    per-key rate limits (GCRA), in Redis or in process
    errors.py    the OpenAI error object and the statuses each route declares
    static/      the browser playground served at / (plain HTML, CSS and an ES module; no build step)
"""

__version__ = "0.1.0"
