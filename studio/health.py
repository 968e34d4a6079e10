"""`python -m studio healthcheck`: is the app answering? Used by the Docker HEALTHCHECK.

Standard library only and nothing else imported, so the check costs a few milliseconds of
start-up inside the container and works in any Python (no venv needed for it).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:7860/"


def healthcheck(url: str = DEFAULT_URL, timeout: float = 5.0) -> int:
    """0 if `url` answers HTTP 200 within `timeout` seconds, else 1 (the reason goes to stderr)."""
    try:
        # No proxy: the app is on this machine, and an HTTP(S)_PROXY in the environment must not
        # turn a local probe into a remote one.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(urllib.request.Request(url, method="GET"), timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        print(f"unhealthy: {url} unreachable ({getattr(exc, 'reason', exc)})", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered HTTP {status}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m studio.health", description=healthcheck.__doc__)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    return healthcheck(args.url, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
