# A GPU worker: PyTorch with CUDA from its official image, then Palicord's worker extras
# (transformers, bitsandbytes, ...). The base's torch satisfies the project's range, so pip
# keeps it. Build from the repository root: docker build -f deploy/worker.Dockerfile .
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY inference ./inference
RUN pip install --no-cache-dir ".[worker]"
# Not root: Pillow's C decoders read untrusted pictures here. The program and its
# packages stay root-owned (read-only to it); only the caches are its own.
RUN useradd --uid 10001 --create-home --home-dir /home/palicord palicord \
 && mkdir -p /data/huggingface /home/palicord/.cache \
 && chown -R 10001:10001 /data/huggingface /home/palicord
# The Hugging Face cache lives on a volume: the checkpoint downloads once. Other caches
# (torch, triton) under XDG_CACHE_HOME, writable with a read-only root filesystem too.
ENV METRICS_HOST=0.0.0.0 \
    HF_HOME=/data/huggingface \
    XDG_CACHE_HOME=/home/palicord/.cache
USER 10001
EXPOSE 9102
# Liveness only: a worker loading a large checkpoint is alive long before it is ready.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9102/healthz', timeout=4)"]
# SIGTERM: the worker finishes its batch and hands back what it had not started.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "inference.worker"]
