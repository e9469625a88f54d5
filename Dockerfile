# syntax=docker/dockerfile:1
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependency layer: only pyproject.toml, so code edits do not reinstall dependencies.
COPY pyproject.toml README.md ./
RUN mkdir -p bot handlers checks && touch bot/__init__.py handlers/__init__.py checks/__init__.py \
    && pip install . && pip uninstall -y chatops-incident-bot

COPY bot ./bot
COPY handlers ./handlers
COPY checks ./checks
COPY services.example.yml ./
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 chatops \
    && mkdir -p /data && chown chatops /data

USER chatops
# CHATOPS_HEADLESS: nobody types into a container, so `chatops run` without Slack variables stops with one line
# naming them (exit 2) instead of opening a terminal chat on /dev/null that ends at once and is restarted forever.
ENV CHATOPS_DATA_DIR=/data PORT=3000 LOG_FORMAT=json CHATOPS_HEADLESS=true
EXPOSE 3000
# /healthz answers 200 only while Redis answers and the queue's loops make progress. It is served in HTTP mode
# (PORT) and by `chatops worker` when WORKER_METRICS_PORT is set; otherwise (Socket Mode) the check falls back to
# the process being alive.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import os,sys,urllib.request; e=os.environ; p=e.get('WORKER_METRICS_PORT') or (e.get('PORT','3000') if e.get('SLACK_SIGNING_SECRET') and not e.get('SLACK_APP_TOKEN') else ''); sys.exit(0 if not p else (0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % p, timeout=4).status==200 else 1))"
ENTRYPOINT ["chatops"]
CMD ["run", "--no-worker"]
