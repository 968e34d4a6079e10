"""Flux LoRA Studio: `python app.py` opens the studio in the browser and starts the worker.

    python app.py [--host 127.0.0.1] [--port 7860] [--data-dir ./studio_data]
                  [--auth user:pass[,user2:pass2]] [--share] [--max-upload-mb 200] [--no-worker]
                  [--unsafe-no-login] [--mcp]

Listening beyond this computer (a --host other than a loopback address, or --share) needs a
login (--auth or STUDIO_AUTH, studio/login.py); without one the app refuses to start unless
--unsafe-no-login is given.

The UI process never trains and never imports torch; the worker (one per data folder) runs
the jobs the UI queues in the job store (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from studio.core.paths import DATA_ENV, DEFAULT_DATA_DIR

DEFAULT_DATA_ARG = f"./{DEFAULT_DATA_DIR}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="app.py", description="Flux LoRA Studio: train FLUX.1 LoRAs in the browser.")
    parser.add_argument("--host", default=None,
                        help="address to listen on (default $STUDIO_HOST, else 127.0.0.1: this computer only; "
                             "on a Hugging Face Space the address the Space gives, $GRADIO_SERVER_NAME or 0.0.0.0)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", 7860)), help="port (default 7860)")
    parser.add_argument("--data-dir", default=os.environ.get(DATA_ENV) or DEFAULT_DATA_ARG,
                        help="data folder: datasets, runs, job store (default $STUDIO_DATA or ./studio_data)")
    parser.add_argument("--auth", default=None,
                        help="require a login: user:password, several separated by commas (a password may "
                             "contain ':' but not ','). Prefer the STUDIO_AUTH environment variable, same format: "
                             "a command line is visible to other local users. Required with a non-local --host "
                             "or --share")
    parser.add_argument("--share", action="store_true",
                        help="make a public gradio.live link (off by default: such links are public for a week; "
                             "needs a login)")
    parser.add_argument("--unsafe-no-login", action="store_true",
                        help="UNSAFE: start without a login even on a non-local --host or with --share, so that "
                             "anyone who can reach the address can train on this machine and read its datasets")
    parser.add_argument("--max-upload-mb", type=int, default=200,
                        help="largest single upload file in MB, and the cap on one upload's total (default 200)")
    parser.add_argument("--mcp", action="store_true", default=os.environ.get("STUDIO_MCP", "") not in ("", "0"),
                        help="also serve the studio's tools to MCP clients at /gradio_api/mcp/ (default "
                             "$STUDIO_MCP=1); with a login, clients send it as HTTP Basic credentials")
    parser.add_argument("--no-worker", action="store_true",
                        help="do not start the background worker (run `python -m studio worker` yourself)")
    return parser.parse_args(argv)


def parse_auth(value: str | None) -> list[tuple[str, str]]:
    """--auth, else STUDIO_AUTH, in studio.login's one grammar; [] when neither is set."""
    from studio.login import AuthFormatError, parse_auth as parse

    try:
        return parse(value if value is not None else os.environ.get("STUDIO_AUTH"))
    except AuthFormatError as exc:
        raise SystemExit(f"app.py: {exc}") from None


LOCAL_HOSTS = ("localhost",)


def is_local(host: str) -> bool:
    """A loopback address (127.0.0.0/8, ::1) or localhost: only this computer can connect."""
    import ipaddress

    if host.strip().lower() in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def listen_host(args: argparse.Namespace) -> str:
    """--host, else $STUDIO_HOST, else 127.0.0.1 — on a Space the address the Space names
    ($GRADIO_SERVER_NAME, else 0.0.0.0): its proxy cannot reach an app on 127.0.0.1."""
    if getattr(args, "host", None):
        return args.host
    if getattr(args, "on_space", False):
        return os.environ.get("STUDIO_HOST") or os.environ.get("GRADIO_SERVER_NAME") or "0.0.0.0"
    return os.environ.get("STUDIO_HOST") or "127.0.0.1"


def exposure_problem(args: argparse.Namespace, accounts: list) -> str | None:
    """Why the app must not start as asked (reachable by others without a login), or None."""
    if accounts or getattr(args, "on_space", False):
        # A Space is public by design: there the studio starts without a login and refuses to
        # train until one is set (apply_space_settings), so its page can say what to do.
        return None
    host = listen_host(args)
    reach = [f"--host {host}"] if not is_local(host) else []
    reach += ["--share"] if args.share else []
    if not reach or args.unsafe_no_login:
        return None
    return (f"app.py: refusing to start: {' and '.join(reach)} would let anyone who can reach this address "
            "use the studio (train on this machine, read your datasets) and no login is set. Set a login with "
            "STUDIO_AUTH=user:password (or --auth), or listen on 127.0.0.1; to run without a login anyway, "
            "add --unsafe-no-login.")


def _keep_blocklist_current(demo, data_dir: Path, stop: threading.Event) -> None:
    from studio.ui.build import refresh_blocked

    while not stop.wait(3.0):
        try:
            refresh_blocked(demo, data_dir)
        except OSError:
            pass


TRAINING_REFUSED = "STUDIO_TRAINING_REFUSED"


def apply_space_settings(args: argparse.Namespace, auth):
    """On a Hugging Face Space: local-disk data folder, the STUDIO_AUTH login, and no training
    until a login is set (a public Space is open to anyone). Returns the auth to launch with."""
    from studio.space import space_settings

    settings = space_settings()
    args.on_space = settings.on_space
    args.host = listen_host(args)
    if not settings.on_space:
        return auth
    if not os.environ.get("STUDIO_DATA") and args.data_dir == DEFAULT_DATA_ARG:
        args.data_dir = str(settings.data_dir)
    if not settings.training_allowed:
        os.environ[TRAINING_REFUSED] = " ".join(settings.problems)
        print("training disabled: " + " ".join(settings.problems), file=sys.stderr)
    return auth or settings.auth or None


def launch_options(accounts: list[tuple[str, str]], data_dir: Path, mcp: bool = False) -> dict:
    """The login's settings and the page's file policy for `launch()`, their middleware together."""
    from studio.login import launch_settings
    from studio.ui.build import launch_kwargs

    return merged_launch_kwargs(launch_settings(accounts, mcp=mcp), launch_kwargs(data_dir))


def _log_to_stderr() -> None:
    """The studio's own log lines (failed logins, publishing) with a time stamp, on stderr."""
    import logging

    studio_log = logging.getLogger("studio")
    if not studio_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
        studio_log.addHandler(handler)
        studio_log.setLevel(logging.INFO)


def merged_launch_kwargs(*parts: dict) -> dict:
    """launch() keyword arguments from several sources; their middleware lists add up (the login's
    client address and the page's language both need one)."""
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            if key == "app_kwargs" and key in out:
                middleware = out[key].get("middleware", []) + value.get("middleware", [])
                out[key] = {**out[key], **value, "middleware": middleware}
            else:
                out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    # No usage analytics calls home from a studio that people run on their own photos.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = parse_args(argv)
    _log_to_stderr()
    accounts = apply_space_settings(args, parse_auth(args.auth))
    problem = exposure_problem(args, accounts)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    args.host = listen_host(args)
    if not accounts and (args.share or not is_local(args.host)):
        print(f"WARNING: --unsafe-no-login: {args.host if not is_local(args.host) else 'the share link'} is "
              "open to anyone who can reach it, with no login.", file=sys.stderr)
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # This process finds the demo model through STUDIO_DATA; the worker hands its children --data-dir.
    os.environ["STUDIO_DATA"] = str(data_dir)
    if not args.no_worker:
        from studio.worker import ensure_worker

        child = ensure_worker(data_dir)
        print("worker: started" if child else "worker: already running for this data folder", file=sys.stderr)

    from studio.api import expose
    from studio.ui.build import build_ui

    demo = build_ui(data_dir, max_upload_mb=args.max_upload_mb)
    expose(demo, data_dir, args.max_upload_mb)  # the documented API (and MCP tools); the page's own events stay private
    stop = threading.Event()
    threading.Thread(target=_keep_blocklist_current, args=(demo, data_dir, stop), daemon=True).start()
    try:
        demo.queue(default_concurrency_limit=4).launch(
            server_name=args.host, server_port=args.port, share=bool(args.share),
            max_file_size=f"{args.max_upload_mb}mb", show_error=False, mcp_server=bool(args.mcp),
            **launch_options(accounts, data_dir, mcp=bool(args.mcp)))
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
