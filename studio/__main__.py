"""The command line: `python -m studio <command>`.

  train CONFIG.yaml [--preset NAME] [--tier TIER] [--set key=value ...] [--run-dir DIR] [--resume]
        [--data-dir DIR]
  tiny-model DIR [--family NAME] [--variant V] [--dev] [--size tiny|small]
  families [--json]
  plan DATASET [--gpu NAME] [--family NAME] [--variant V]
  report-card RUN_DIR [--promote STEP]
  verify RUN_DIR
  build-demo DIR [--seed N], demo-dataset DIR   (see studio/demo/cli.py)
  config-reference
  presets
  dataset import|check ..., caption ...   (see studio/data/cli.py)
  worker --data-dir DIR                   (see studio/worker.py)
  healthcheck [--url URL]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import ConfigError, config_reference, list_presets, load_preset, parse_yaml, read_text, resolve
from .data.cli import add_dataset_commands
from .demo.cli import add_demo_commands
from .events import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from .worker import add_worker_command


def cmd_train(args, hooks=None) -> int:
    """`hooks`: studio.hooks.TrainHooks for the engine (tests/faulty_trainer.py passes faulty ones)."""
    from .config import check

    try:
        user = parse_yaml(read_text(args.config), args.config) if args.config else {}
        cfg = check(resolve(user, preset=args.preset, tier=args.tier, overrides=args.set or []))
        run_dir = Path(args.run_dir) if args.run_dir else cfg.run_dir()
        if args.resume:  # before anything in the run folder is written
            from .resume import check_resume
            check_resume(cfg, run_dir)
    except ConfigError as exc:
        print("Invalid config:\n  " + "\n  ".join(exc.problems), file=sys.stderr)
        return EXIT_CONFIG
    from .models import hide_unused_quantisation_packages
    hide_unused_quantisation_packages(cfg)  # this process trains one config: decide before diffusers loads

    from .engine import train
    from .events import Broadcast, ConsoleReporter, JsonlReporter
    from .runlog import run_log

    run_dir.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) > 0:
        # Data parallel: only rank 0 writes the run's events and log; the others print their own errors.
        return train(cfg, run_dir, ConsoleReporter(), resume=args.resume, hooks=hooks, data_dir=args.data_dir)
    from .plan_record import measured, record_actual, record_prediction

    with run_log(run_dir):
        predicted = record_prediction(run_dir, cfg)  # plan.json: checked against what happens
        jsonl = JsonlReporter(run_dir / "metrics.jsonl")
        try:
            code = train(cfg, run_dir, Broadcast(jsonl, ConsoleReporter()), resume=args.resume, hooks=hooks,
                         data_dir=args.data_dir)
        finally:
            jsonl.close()
        outcome = record_actual(run_dir, *measured(run_dir)) if predicted else None
        if outcome and outcome.get("actual", {}).get("seconds_per_step"):
            print(f"Plan vs this run: {predicted['seconds_per_step']} s/step and {predicted['peak_gib']} GB predicted, "
                  f"{outcome['actual']['seconds_per_step']} s/step and {outcome['actual']['peak_gib']} GB measured "
                  f"(error {outcome['error_percent']}); plan.json keeps both.", flush=True)
        from .training_utils import checkpoints_size

        kept, size = checkpoints_size(run_dir / "checkpoints")
        if kept:
            print(f"Checkpoints kept: {kept}, {size / 2**20:,.1f} MB on disk (save.keep_last: "
                  f"{cfg.save.keep_last or 'every one'}).", flush=True)
        if code == EXIT_OK:  # the checklist the Results tab shows (verify.json), printed into train.log
            from .verify import checklist_text, verify_run

            print("Verifying the LoRA files:\n" + checklist_text(verify_run(run_dir)), flush=True)
        return code


def cmd_tiny_model(args) -> int:
    from .families.base import ModelError, inspect_model
    from .families.choice import lookup, nearest

    chosen = lookup(args.family)
    if chosen is None:
        near = nearest(args.family)
        print(f"--family {args.family!r} is not a model family the studio knows"
              + (f"; did you mean {near!r}?" if near else ".") + " python -m studio families lists them.",
              file=sys.stderr)
        return EXIT_CONFIG
    family, variant = chosen
    variant = args.variant or variant
    if args.dev and family.name != "flux1":
        print("--dev is FLUX.1's; name the variant with --variant instead.", file=sys.stderr)
        return EXIT_CONFIG
    if args.dev and variant not in ("", "dev"):
        print(f"--dev asks for FLUX.1 [dev], but {args.family} --variant {args.variant or variant} asks for "
              f"{variant}; give one of them.", file=sys.stderr)
        return EXIT_CONFIG
    variant = variant or ("dev" if args.dev else "")
    if family.name == "flux1":
        variant = variant or "schnell"  # what `tiny-model DIR` always built
    if variant and variant not in family.variants:
        print(f"--variant {variant!r}: {family.name} has the variants {', '.join(family.variants)}.", file=sys.stderr)
        return EXIT_CONFIG
    path = family.build_tiny(args.dir, size=args.size, variant=variant)
    try:
        info = inspect_model(str(path))
        title = info.model_family.variants[info.family].title
    except ModelError:
        title = family.name
    print(f"Wrote a {args.size} {title}-shaped model ({family.name}) to {path}")
    return EXIT_OK


def cmd_families(args) -> int:
    from .families.listing import families_json, families_text

    print(families_json() if args.json else families_text())
    return EXIT_OK


def cmd_plan(args) -> int:
    from .plan import make_plan, plan_text
    from .config.gpu import detect_gpu

    gpu, gib = (args.gpu, args.gpu_gb) if args.gpu else (detect_gpu() or (None, None))
    if not Path(args.dataset).is_dir():
        print(f"{args.dataset} is not a folder: give a dataset folder (studio_data/datasets/NAME) or a folder "
              "of photos.", file=sys.stderr)
        return EXIT_CONFIG
    from .plan import GPUS, find_gpu

    if gpu and gib is None and find_gpu(gpu) is None:
        print(f"Unknown GPU {gpu!r}: give its memory with --gpu-gb, or one of: {', '.join(GPUS)}.", file=sys.stderr)
        return EXIT_CONFIG
    try:
        plan = make_plan(args.dataset, gpu, gib, variant=args.variant, resolution=args.resolution, steps=args.steps,
                         family=args.family)
    except OSError as exc:
        print(f"Cannot read the dataset {args.dataset}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:  # an unknown family or variant
        from .families.choice import accepted_names

        print(f"{exc}. --family takes one of: {', '.join(n for n in accepted_names() if n != 'auto')}.",
              file=sys.stderr)
        return EXIT_CONFIG
    if not plan.images:
        print(f"No readable photos in {args.dataset}: import some first (python -m studio dataset import).",
              file=sys.stderr)
        return EXIT_CONFIG
    print(plan.to_json() if args.json else plan_text(plan))
    return EXIT_OK


def cmd_report_card(args) -> int:
    from .models import ModelError
    from .report_card import ReportCardError, build_report_card, promote

    try:
        if args.promote is not None:
            files = promote(args.run_dir, args.promote)
            print(f"Step {args.promote} is now the run's final LoRA (verified): " + ", ".join(Path(f).name for f in files)
                  + ". The previous files are in previous-final/.")
            return EXIT_OK
        result = build_report_card(args.run_dir, progress=lambda done, total, message: print(message, flush=True))
    except (ReportCardError, ModelError) as exc:  # a run that is not finished, a base model that cannot load
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    print(f"Report card: {len(result['rows'])} rows x {len(result['strengths'])} strengths for "
          f"{len(result['prompts'])} prompt(s), in {Path(args.run_dir) / 'report'}: " + ", ".join(result["grids"]))
    return EXIT_OK


def cmd_verify(args) -> int:
    from .verify import checklist_text, verify_run

    checks = verify_run(args.run_dir)
    print(checklist_text(checks))
    ok = all(c.ok for c in checks)
    print("The LoRA files are proven: they load as intended in diffusers and ComfyUI/Forge." if ok else
          "Do not share these files: fix what failed (or train again) and verify again.")
    return EXIT_OK if ok else EXIT_FAILED


def cmd_config_reference(args) -> int:
    text = config_reference()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_presets(args) -> int:
    if args.family:
        from .families.choice import lookup, nearest

        if lookup(args.family) is None:
            near = nearest(args.family)
            print(f"--family {args.family!r} is not a model family the studio knows"
                  + (f"; did you mean {near!r}?" if near else ".") + " python -m studio families lists them.",
                  file=sys.stderr)
            return EXIT_CONFIG
    for kind in ("subject", "memory"):
        print(f"{kind} presets" + (f" for {args.family}:" if args.family and kind == "subject" else ":"))
        for name in list_presets(kind, family=args.family or None):
            preset = load_preset(name, kind)
            suits = f" [families: {', '.join(preset.families)}]" if preset.families else ""
            print(f"  {name:10s} {preset.title}: {preset.description.splitlines()[0][:90]}{suits}")
    return EXIT_OK


def command(sub, func, name: str, **kwargs) -> argparse.ArgumentParser:
    """A sub-command `name` that runs `func(args)`."""
    parser = sub.add_parser(name, **kwargs)
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m studio", description="Flux LoRA Studio")
    sub = parser.add_subparsers(dest="command", required=True)

    p = command(sub, cmd_train, "train", help="train a LoRA from a YAML config (headless)")
    p.add_argument("config", nargs="?", help="YAML config (partial configs are fine)")
    p.add_argument("--preset", help="subject preset: " + ", ".join(list_presets()))
    p.add_argument("--tier", help="memory tier: 24gb, 16gb, 12gb, 8gb, cpu (default: detected)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. lora.rank=32")
    p.add_argument("--run-dir", help="run folder (default: save.output_dir/save.run_name)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--data-dir", help="data folder: caches and the demo model (default: $STUDIO_DATA or ./studio_data)")

    p = command(sub, cmd_tiny_model, "tiny-model", help="write a model of a family with random weights (offline)")
    p.add_argument("dir")
    p.add_argument("--family", default="flux1", help="a family or family-variant name (python -m studio families)")
    p.add_argument("--variant", default="", help="one of the family's variants (default: the family's own)")
    p.add_argument("--dev", action="store_true", help="FLUX.1 only: guidance-distilled (dev-shaped)")
    p.add_argument("--size", choices=["tiny", "small"], default="tiny")

    p = command(sub, cmd_families, "families", help="the model families: variants, sizes, licences, memory tiers")
    p.add_argument("--json", action="store_true")

    p = command(sub, cmd_plan, "plan", help="what fits on this computer (or --gpu), how long it takes, what it costs")
    p.add_argument("dataset", help="a dataset folder (studio_data/datasets/NAME) or a folder of photos")
    p.add_argument("--gpu", help='plan for this GPU instead of the detected one, e.g. "RTX 4090"')
    p.add_argument("--gpu-gb", type=float, help="its memory in GB (default: known for common GPUs)")
    p.add_argument("--family", help="plan this model family (flux1, flux1-schnell, flux2-klein, …; default: the "
                                    "best that fits the card)")
    p.add_argument("--variant", help="its variant (dev, schnell, base-4b, …)")
    p.add_argument("--resolution", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--json", action="store_true")

    p = command(sub, cmd_report_card, "report-card",
                help="grids of checkpoints x LoRA strengths at fixed seeds; --promote a step")
    p.add_argument("run_dir")
    p.add_argument("--promote", type=int, metavar="STEP", help="make this checkpoint the run's final LoRA")

    p = command(sub, cmd_verify, "verify",
                help="prove a run's two LoRA files (keys, shapes, same ΔW) before sharing them")
    p.add_argument("run_dir", help="the run folder (holds config.yaml and the two .safetensors files)")

    p = command(sub, cmd_config_reference, "config-reference", help="print the config reference (Markdown)")
    p.add_argument("--output", "-o")

    p = command(sub, cmd_presets, "presets", help="list presets")
    p.add_argument("--family", help="only the presets for this model family (python -m studio families)")

    p = command(sub, lambda args: __import__("studio.health", fromlist=["healthcheck"]).healthcheck(
        args.url, args.timeout), "healthcheck", help="exit 0 when the studio at --url answers (Docker HEALTHCHECK)")
    p.add_argument("--url", default="http://127.0.0.1:7860/")
    p.add_argument("--timeout", type=float, default=5.0)

    add_dataset_commands(sub)
    add_demo_commands(sub)
    add_worker_command(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print("Invalid settings:\n  " + "\n  ".join(exc.problems), file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
