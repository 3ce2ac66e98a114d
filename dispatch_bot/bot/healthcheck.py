"""`python -m dispatch_bot.bot.healthcheck`: the container's HEALTHCHECK, exit 0 when /healthz answers ok.

The image has no curl; this asks the bot's own /healthz on the port `serve` listens on (PORT or slack.port).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

from .config import ConfigError, load_settings


def probe(port: int, timeout: float = 4.0) -> str | None:
    """None when http://127.0.0.1:PORT/healthz answers {"ok": true}, else why not, in a few words."""
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read(4096) or b"null")
    except urllib.error.HTTPError as exc:
        return f"{url} answered HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{url} did not answer ({type(exc).__name__})"
    return None if isinstance(body, dict) and body.get("ok") is True else f"{url} did not answer ok"


def main() -> int:
    try:
        port = load_settings().port
    except ConfigError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    problem = probe(port)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
