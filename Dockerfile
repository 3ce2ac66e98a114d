# dispatch-bot: `docker build -t dispatch-bot .` then
#   docker run --rm -e SLACK_BOT_TOKEN -e SLACK_APP_TOKEN -e LIVEKIT_URL -e LIVEKIT_API_KEY \
#     -e LIVEKIT_API_SECRET -v dispatch-audit:/data dispatch-bot
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DISPATCH_BOT_DB=/data/dispatch-audit.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY dispatch_bot ./dispatch_bot
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /data dispatch \
    && mkdir -p /data && chown dispatch /data

USER dispatch
VOLUME ["/data"]
# HTTP mode only (no SLACK_APP_TOKEN): Slack posts to /slack/events, and /healthz answers probes.
EXPOSE 3000
ENTRYPOINT ["dispatch-bot"]
CMD ["serve"]
