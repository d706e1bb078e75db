# The bot: discord.py and the torch-free queue contract only (no torch, no transformers).
# Build from the repository root: docker build -f deploy/bot.Dockerfile .
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY inference ./inference
RUN pip install --no-cache-dir ".[bot]"
USER nobody
# Metrics and health for the orchestrator (inference.ops): /metrics, /healthz, /readyz.
ENV METRICS_HOST=0.0.0.0
EXPOSE 9101
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9101/healthz', timeout=4)"]
CMD ["python", "-m", "bot"]
