# syntax=docker/dockerfile:1
# driftline stream worker (and the one-shot driftline commands in docker-compose.yml).
#   docker build -t driftline:local .
#   docker run --rm driftline:local --help

# --- build: install the project and its dependencies into a virtualenv -------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The build context is filtered by .dockerignore (no .venv, tests, local data).
COPY . .
# Dependencies from the runtime lock (exact versions, hashes checked), then the project itself.
RUN python -m venv /opt/driftline \
    && /opt/driftline/bin/pip install --require-hashes -r requirements.runtime.lock \
    && /opt/driftline/bin/pip install . --no-deps

# --- runtime: the virtualenv only, run as an unprivileged user ---------------------------------
FROM python:3.11-slim
LABEL org.opencontainers.image.title="driftline" \
      org.opencontainers.image.description="driftline stream worker" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH="/opt/driftline/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A fixed uid so volume ownership is the same on every host. The dashboards directory exists in
# the image so a fresh named volume mounted there inherits the driftline owner.
RUN groupadd --system --gid 10001 driftline \
    && useradd --system --uid 10001 --gid driftline --home-dir /var/lib/driftline \
       --shell /usr/sbin/nologin driftline \
    && mkdir -p /var/lib/driftline/dashboards \
    && chown -R driftline:driftline /var/lib/driftline
COPY --from=build /opt/driftline /opt/driftline
USER driftline
WORKDIR /var/lib/driftline
# The worker writes this file once its first partition assignment completed.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["test", "-f", "/tmp/driftline-ready"]
ENTRYPOINT ["driftline"]
CMD ["worker", "--ready-file", "/tmp/driftline-ready"]
