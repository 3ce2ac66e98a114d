# dispatch-bot: `docker build -t dispatch-bot .` then, in Socket Mode (no port to publish):
#   docker run --rm -e SLACK_BOT_TOKEN -e SLACK_APP_TOKEN -e LIVEKIT_URL -e LIVEKIT_API_KEY \
#     -e LIVEKIT_API_SECRET -v dispatch-audit:/data dispatch-bot
# or in HTTP mode (no SLACK_APP_TOKEN; SLACK_SIGNING_SECRET instead, a TLS reverse proxy in front of port 3000):
#   docker run --rm -p 127.0.0.1:3000:3000 -e SLACK_BOT_TOKEN -e SLACK_SIGNING_SECRET -e LIVEKIT_URL \
#     -e LIVEKIT_API_KEY -e LIVEKIT_API_SECRET -v dispatch-audit:/data dispatch-bot
#
# The base is pinned to an exact Python release and Debian release. Add its digest (`@sha256:…`, from
# `docker buildx imagetools inspect python:3.11.14-slim-bookworm`) where the build machine can reach the registry.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DISPATCH_BOT_DB=/data/dispatch-audit.db

# A numeric user and group, so that Kubernetes' runAsNonRoot can verify the image does not run as root.
RUN groupadd --system --gid 10001 dispatch \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home dispatch \
    && mkdir -p /data && chown 10001:10001 /data

WORKDIR /app
# The dependencies first, from pyproject.toml alone: a change of the source does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY dispatch_bot ./dispatch_bot
RUN pip install --no-deps .

USER 10001:10001
VOLUME ["/data"]
EXPOSE 3000
# Both modes serve /healthz on PORT: 200 while the audit database takes a write and (Socket Mode) Slack is connected.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "dispatch_bot.bot.healthcheck"]
ENTRYPOINT ["dispatch-bot"]
CMD ["serve"]
