"""Flux LoRA Studio: `python app.py` opens the studio in the browser and starts the worker.

    python app.py [--host 127.0.0.1] [--port 7860] [--data-dir ./studio_data]
                  [--auth user:pass] [--share] [--max-upload-mb 200] [--no-worker]

The UI process never trains and never imports torch; the worker (one per data folder) runs
the jobs the UI queues in the job store (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="app.py", description="Flux LoRA Studio: train FLUX.1 LoRAs in the browser.")
    parser.add_argument("--host", default=os.environ.get("STUDIO_HOST", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1: this computer only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", 7860)), help="port (default 7860)")
    parser.add_argument("--data-dir", default=os.environ.get("STUDIO_DATA", "./studio_data"),
                        help="data folder: datasets, runs, job store (default $STUDIO_DATA or ./studio_data)")
    parser.add_argument("--auth", default=None,
                        help="require a login, as user:pass (or set STUDIO_AUTH); needed when --host is not local")
    parser.add_argument("--share", action="store_true",
                        help="make a public gradio.live link (off by default: such links are public for a week)")
    parser.add_argument("--max-upload-mb", type=int, default=200,
                        help="largest single upload file in MB, and the cap on one upload's total (default 200)")
    parser.add_argument("--no-worker", action="store_true",
                        help="do not start the background worker (run `python -m studio worker` yourself)")
    return parser.parse_args(argv)


def parse_auth(value: str | None) -> tuple[str, str] | None:
    value = value if value is not None else os.environ.get("STUDIO_AUTH")
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SystemExit("--auth / STUDIO_AUTH must look like user:password")
    return user, password


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
    if not settings.on_space:
        return auth
    if not os.environ.get("STUDIO_DATA") and args.data_dir == "./studio_data":
        args.data_dir = str(settings.data_dir)
    if not settings.training_allowed:
        os.environ[TRAINING_REFUSED] = " ".join(settings.problems)
        print("training disabled: " + " ".join(settings.problems), file=sys.stderr)
    return auth or settings.auth or None


def main(argv: list[str] | None = None) -> int:
    # No usage analytics calls home from a studio that people run on their own photos.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = parse_args(argv)
    auth = apply_space_settings(args, parse_auth(args.auth))
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # The engine finds the demo model and caches through STUDIO_DATA; the worker's children inherit it.
    os.environ["STUDIO_DATA"] = str(data_dir)
    if args.host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        print("warning: listening on a non-local address without --auth; anyone who can reach it can use it",
              file=sys.stderr)
    if not args.no_worker:
        from studio.worker import ensure_worker

        child = ensure_worker(data_dir)
        print("worker: started" if child else "worker: already running for this data folder", file=sys.stderr)

    from studio.ui.build import build_ui, launch_kwargs

    demo = build_ui(data_dir, max_upload_mb=args.max_upload_mb)
    stop = threading.Event()
    threading.Thread(target=_keep_blocklist_current, args=(demo, data_dir, stop), daemon=True).start()
    try:
        demo.queue(default_concurrency_limit=4).launch(
            server_name=args.host, server_port=args.port, share=bool(args.share), auth=auth,
            max_file_size=f"{args.max_upload_mb}mb", show_error=False,
            **launch_kwargs(data_dir))
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
