"""CLI commands for the demo model: `build-demo` and `demo-dataset`.

`studio/__main__.py` calls `add_demo_commands(subparsers)`; each command sets `func`, which
returns the process exit code.
"""

from __future__ import annotations

import time
from pathlib import Path

from studio.core.vocab import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def replaceable(out: Path) -> str | None:
    """Why `out` may not be written (None: it may). The build replaces its folder at the end, so a
    folder other than an earlier demo model (or an empty one) is refused before any training."""
    if not out.exists():
        return None
    if not out.is_dir():
        return f"{out} is a file, not a folder. Give a new folder name (it is created)."
    if any(out.iterdir()) and not (out / "build.json").is_file():
        return (f"{out} already holds files and is not a demo model folder (no build.json); build-demo replaces "
                "the folder it writes, so it will not write there. Give a new or empty folder, or an earlier "
                "demo model folder to replace.")
    return None


def cmd_build_demo(args) -> int:
    import sys

    import torch

    from .build import Recipe, build

    refused = replaceable(Path(args.out))
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return EXIT_USAGE

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = Recipe() if args.scale == 1.0 else Recipe().scaled(args.scale)
    start = time.perf_counter()
    path = build(args.out, seed=args.seed, recipe=recipe, log=lambda line: print(line, flush=True))
    print(f"Wrote the demo model to {path} in {time.perf_counter() - start:.0f} s (seed {args.seed}).")
    return EXIT_OK


def cmd_demo_dataset(args) -> int:
    from .dataset import TRIGGER, write_dataset

    folder = write_dataset(args.out, count=args.count, seed=args.seed)
    print(f"Wrote {args.count} pictures with captions to {folder}; their trigger word is '{TRIGGER}'.")
    return EXIT_OK


def add_demo_commands(sub) -> None:
    p = sub.add_parser("build-demo", help="train the demo model from a seed on this machine (CPU, ~40 min)")
    p.add_argument("out", type=Path,
                   help="folder to write (an earlier demo model there is replaced; other files are refused)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every stage's step count (e.g. 0.01 for a smoke build; not a usable model)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads (the committed model was built with 2; 0 = torch's default)")
    p.set_defaults(func=cmd_build_demo)

    p = sub.add_parser("demo-dataset", help="write the demo dataset (pictures + captions) for a first LoRA")
    p.add_argument("out", type=Path)
    p.add_argument("--count", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_dataset)
