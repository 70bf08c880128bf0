# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target gateway -t hsa-video-gateway .   slim: FastAPI gateway, no torch
#   docker build --target worker  -t hsa-video-worker  .   CUDA torch + diffusers; weights mounted, never baked in
#   docker build --target worker-cpu -t hsa-video-worker-cpu .   CPU torch, for laptops (tiny model)

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 hsa
WORKDIR /app
COPY pyproject.toml README.md ./
COPY hsa_core ./hsa_core
COPY hsa_video ./hsa_video
COPY jobs ./jobs
COPY server ./server
COPY worker ./worker

FROM base AS gateway
RUN pip install ".[server]"
USER hsa
ENV HSA_DATA_DIR=/tmp/hsa-data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["hsa-video", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]

FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 AS worker
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip \
    && rm -rf /var/lib/apt/lists/* && ln -sf /usr/bin/python3 /usr/local/bin/python \
    && useradd --create-home --uid 10001 hsa
WORKDIR /app
COPY --from=base /app /app
# CUDA torch first (the default index serves CUDA wheels), then the project
RUN python -m pip install torch && python -m pip install ".[worker]" \
    && mkdir -p /data && chown hsa /data
USER hsa
# /data: the timing cache (mount a volume there); the model's weights are mounted, never baked in
ENV HSA_DATA_DIR=/data
EXPOSE 9101
CMD ["hsa-video", "worker"]

FROM base AS worker-cpu
COPY constraints ./constraints
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
    && pip install -c constraints/cpu.txt ".[worker]" \
    && mkdir -p /data && chown hsa /data
USER hsa
ENV HSA_DATA_DIR=/data
EXPOSE 9101
CMD ["hsa-video", "worker"]
