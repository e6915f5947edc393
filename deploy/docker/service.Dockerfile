# syntax=docker/dockerfile:1
#
# One image per vidq service, chosen with the SERVICE build argument:
#
#   docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=transcoder .
#
# SERVICE is gateway, transcoder, thumbnailer, notifier, or shared.bootstrap (the one-shot set-up
# of the broker and the database). The container runs `python -m $SERVICE` as an unprivileged
# user. docker-compose.yml at the repository root builds all five.

# Debian 12 (bookworm): its ffmpeg 5.1 is the one the test suite runs against (the tee muxer's
# per-file options, ffprobe's messages); a newer Debian brings another ffmpeg.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: the project and the dependencies of this one service, in a virtual environment -------
FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
RUN test -n "${SERVICE}" \
    || { echo "set --build-arg SERVICE (gateway, transcoder, thumbnailer, notifier or shared.bootstrap)" >&2; \
         exit 1; }
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/vidq
WORKDIR /src
# pyproject.toml names README.md as the package's readme: both are needed to install it.
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY gateway/ gateway/
COPY transcoder/ transcoder/
COPY thumbnailer/ thumbnailer/
COPY notifier/ notifier/
COPY vidq/ vidq/
# Only the gateway (FastAPI, uvicorn) and the notifier (aiosmtplib, Jinja2) have extras of their
# own; every image has the `vidq` command-line client (`docker compose exec gateway vidq ls`).
RUN case "${SERVICE}" in \
        gateway|notifier) spec=".[${SERVICE},cli]" ;; \
        *) spec=".[cli]" ;; \
    esac \
    && /opt/vidq/bin/pip install "${spec}"

# -- runtime -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
# ffprobe and ffmpeg come from Debian's ffmpeg package: the gateway probes every upload, the
# transcoder and the thumbnailer encode. The notifier and the bootstrap never run them.
RUN case "${SERVICE}" in \
        gateway|transcoder|thumbnailer) \
            apt-get update \
            && apt-get install -y --no-install-recommends ffmpeg \
            && rm -rf /var/lib/apt/lists/* ;; \
    esac
# A fixed uid, so that every image owns the shared media volume alike. Docker copies the
# ownership of /var/lib/vidq/storage into a named volume when it is first mounted there.
RUN groupadd --system --gid 10001 vidq \
    && useradd --system --uid 10001 --gid vidq --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin vidq \
    && mkdir -p /var/lib/vidq/storage \
    && chown vidq:vidq /var/lib/vidq/storage
COPY --from=build /opt/vidq /opt/vidq
# The project is installed as a package, so the default VIDQ_MIGRATIONS_DIR (deploy/migrations
# beside the source tree) would point into site-packages: the SQL lives here instead.
COPY deploy/migrations/ /app/deploy/migrations/
WORKDIR /app
ENV PATH=/opt/vidq/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SERVICE=${SERVICE} \
    VIDQ_MIGRATIONS_DIR=/app/deploy/migrations \
    VIDQ_STORAGE_DIR=/var/lib/vidq/storage
USER vidq
# exec: Python receives SIGTERM itself, to drain in-flight work (docker-compose.yml adds an init
# as PID 1 in front of it; without one Python is PID 1).
CMD ["sh", "-c", "exec python -m \"$SERVICE\""]
