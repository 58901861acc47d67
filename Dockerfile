# One image for api and workers. GPU workers build with --build-arg EXTRAS=gpu and TORCH_INDEX set
# to a CUDA wheel index; the default is the CPU build of torch pinned in pyproject.toml.
FROM python:3.11-slim-bookworm
ARG EXTRAS=""
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY api api
COPY worker worker
COPY db db
COPY callpulse callpulse
COPY migrations migrations
# `callpulse train` runs the training package; the workers and the API never import it.
COPY training training
RUN pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" "torch==2.13.0" \
    && pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}"
RUN useradd --create-home --uid 10001 callpulse && mkdir -p /data/media && chown -R callpulse /data
USER callpulse
ENV CALLPULSE_MEDIA_DIR=/data/media CALLPULSE_DATA_DIR=/data
EXPOSE 8000
CMD ["callpulse", "api", "--host", "0.0.0.0", "--port", "8000"]
