"""Does the demo model draw what it is asked? Colour and shape accuracy over a grid of prompts.

Every colour × every shape of the demo world, each on a background colour of its own, at
several seeds: "a red circle on a green background". Each picture is generated with the
standard FluxPipeline call (the model folder's scheduler, `--steps`, `--max-sequence-length`, and
guidance against the empty prompt at `--true-cfg`, the model's own setting unless given),
then judged from its pixels by `studio.demo.judge` (background from the border, the shape's
colour as the commonest other palette colour, the shape by two judges):

  colour accuracy      the shape's colour is the prompted colour (chance: 1 in 8)
  shape accuracy       the prompted shape, named by the shape's outline: how many corners it
                       has (3, 4, 5, or none for a circle), whatever its turn (chance: 1 in 4)
  template accuracy    the best-fitting template is the prompted shape: the world's exact
                       upright shapes stretched to the shape's box, IoU (chance: 1 in 4)
  background accuracy  the border's colour is the prompted background colour
  all three            colour, shape and background all right

The judges are first run on the world's own pictures for the same prompts (they should name
every one right), and on the same pictures turned by up to 15° and blurred (what a human still
names at a glance), so a low figure is the model's, not a judge's. The baseline, measured
in the same run at the same seeds: the same pipeline with a random-weight transformer (what the
demo model was before it was trained: same VAE and text encoders, `FluxTransformer2DModel`'s
own initialisation from the model's config).

    .venv/bin/python bench/demo_quality.py                       # the committed demo model
    .venv/bin/python bench/demo_quality.py --model DIR --seeds 2 --sheet /tmp/sheet.png --json out.json
    .venv/bin/python bench/demo_quality.py --true-cfg 1                     # without guidance
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from studio.demo import MODEL_DIR  # noqa: E402
from studio.demo.judge import judge  # noqa: E402
from studio.demo.world import COLOURS, SHAPES, Scene, draw, with_articles  # noqa: E402


def grid() -> list[tuple[str, str, str]]:
    """(colour, shape, background) for every colour and shape; backgrounds rotate through the rest."""
    names = list(COLOURS)
    cells = []
    for i, colour in enumerate(names):
        others = [c for c in names if c != colour]
        for j, shape in enumerate(SHAPES):
            cells.append((colour, shape, others[(i + 2 * j) % len(others)]))
    return cells


def prompt(colour: str, shape: str, background: str) -> str:
    return with_articles(f"a {colour} {shape} on a {background} background")


def score(verdicts, cells) -> dict:
    n = len(cells)
    colour = sum(v.colour == c for v, (c, s, b) in zip(verdicts, cells))
    shape = sum(v.shape == s for v, (c, s, b) in zip(verdicts, cells))
    template = sum(v.template == s for v, (c, s, b) in zip(verdicts, cells))
    background = sum(v.background == b for v, (c, s, b) in zip(verdicts, cells))
    every = sum(v.colour == c and v.shape == s and v.background == b for v, (c, s, b) in zip(verdicts, cells))
    return {"n": n, "colour": colour / n, "shape": shape / n, "template": template / n, "background": background / n,
            "all": every / n, "fit": sum(v.fit for v in verdicts) / n}


def breakdown(verdicts, cells, key: int, attr: str) -> dict:
    out = {}
    for name in sorted({cell[key] for cell in cells}):
        pairs = [(v, cell) for v, cell in zip(verdicts, cells) if cell[key] == name]
        out[name] = sum(getattr(v, attr) == cell[key] for v, cell in pairs) / len(pairs)
    return out


def turned(image, rng: random.Random):
    """The picture turned by up to 15 degrees (the corners filled with the background) and blurred."""
    from PIL import Image, ImageFilter
    image = image.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BICUBIC, fillcolor=image.getpixel((1, 1)))
    return image.filter(ImageFilter.GaussianBlur(1.5))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(MODEL_DIR), help="a demo model folder (default: the committed one)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per prompt")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's README value)")
    parser.add_argument("--true-cfg", type=float, default=None,
                        help="guidance against the empty prompt, true_cfg_scale (default: the model's; 1 = off)")
    parser.add_argument("--shift", type=float, default=None, help="override the scheduler's shift (default: the model's)")
    parser.add_argument("--max-sequence-length", type=int, default=256, help="T5 length (schnell: 256; diffusers' default: 512)")
    parser.add_argument("--sheet", help="write every generated picture into one PNG")
    parser.add_argument("--baseline-seeds", type=int, default=1, help="seeds per prompt for the random-weight baseline")
    parser.add_argument("--json", help="write all figures to this file")
    args = parser.parse_args()

    import torch
    from diffusers import FluxPipeline

    from studio.demo import sampling_defaults

    torch.manual_seed(0)
    defaults = sampling_defaults(args.model)
    steps = args.steps or defaults["num_inference_steps"]
    true_cfg = defaults["true_cfg_scale"] if args.true_cfg is None else args.true_cfg
    cells = grid()
    prompts = [prompt(*cell) for cell in cells]

    # The judges on the world's own pictures of the same prompts, at random places and sizes, as
    # drawn and turned by up to 15 degrees and blurred.
    rng = random.Random(0)
    world = [draw(Scene(s, c, (b,), centre=(rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65)),
                        radius=rng.uniform(0.18, 0.36)))
             for c, s, b in cells for _ in range(args.seeds)]
    world_cells = [cell for cell in cells for _ in range(args.seeds)]
    judged_world = score([judge(im) for im in world], world_cells)
    judged_turned = score([judge(turned(im, rng)) for im in world], world_cells)

    pipe = FluxPipeline.from_pretrained(args.model, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if args.shift is not None:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, shift=args.shift)
    shift = pipe.scheduler.config.shift

    def generate(seeds: int) -> tuple[list, list]:
        images, all_cells = [], []
        for seed in range(seeds):
            generators = [torch.Generator().manual_seed(1000 * seed + k) for k in range(len(prompts))]
            images += pipe(prompt=prompts, num_inference_steps=steps, generator=generators,
                           max_sequence_length=args.max_sequence_length, height=128, width=128,
                           true_cfg_scale=true_cfg, negative_prompt=[""] * len(prompts)).images
            all_cells += cells
        return images, all_cells

    start = time.perf_counter()
    images, all_cells = generate(args.seeds)
    seconds = time.perf_counter() - start
    verdicts = [judge(im) for im in images]
    result = score(verdicts, all_cells)

    trained = pipe.transformer
    torch.manual_seed(0)
    pipe.transformer = type(trained).from_config(trained.config)  # random weights, same shape
    baseline_images, baseline_cells = generate(args.baseline_seeds)
    baseline = score([judge(im) for im in baseline_images], baseline_cells)
    pipe.transformer = trained
    by_colour = breakdown(verdicts, all_cells, 0, "colour")
    by_shape = breakdown(verdicts, all_cells, 1, "shape")
    by_template = breakdown(verdicts, all_cells, 1, "template")

    print(f"model {args.model}: {len(images)} pictures ({len(cells)} prompts x {args.seeds} seeds), "
          f"{steps} steps, shift {shift}, true_cfg_scale {true_cfg}, max_sequence_length {args.max_sequence_length}, {seconds:.0f} s "
          f"({seconds / len(images):.2f} s per picture)")
    print(f"| measure | demo model | random-weight transformer ({len(baseline_images)} pictures) "
          "| judges on drawn pictures | on drawn pictures turned ≤15° and blurred | chance |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, label, chance in (("colour", "colour accuracy", 1 / 8), ("shape", "shape accuracy (outline)", 1 / 4),
                                ("template", "shape accuracy (template)", 1 / 4),
                                ("background", "background accuracy", 1 / 7), ("all", "all three (outline)", 1 / 224)):
        print(f"| {label} | {result[name]:.1%} | {baseline[name]:.1%} | {judged_world[name]:.1%} "
              f"| {judged_turned[name]:.1%} | {chance:.1%} |")
    print(f"| mean template IoU | {result['fit']:.2f} | {baseline['fit']:.2f} | {judged_world['fit']:.2f} "
          f"| {judged_turned['fit']:.2f} | |")
    print("colour accuracy by colour:     " + ", ".join(f"{k} {v:.0%}" for k, v in by_colour.items()))
    print("shape accuracy by shape:       " + ", ".join(f"{k} {v:.0%}" for k, v in by_shape.items()))
    print("template accuracy by shape:    " + ", ".join(f"{k} {v:.0%}" for k, v in by_template.items()))

    if args.sheet:
        from PIL import Image
        sheet = Image.new("RGB", (128 * len(cells) // 4, 128 * 4 * args.seeds))
        for k, im in enumerate(images):
            seed, idx = divmod(k, len(cells))
            sheet.paste(im, ((idx % (len(cells) // 4)) * 128, (seed * 4 + idx // (len(cells) // 4)) * 128))
        sheet.save(args.sheet)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.platform(), "threads": torch.get_num_threads(), "model": args.model,
            "steps": steps, "shift": shift, "true_cfg_scale": true_cfg, "max_sequence_length": args.max_sequence_length, "seeds": args.seeds,
            "seconds": seconds, "result": result, "baseline_random_transformer": baseline, "judge_on_world": judged_world,
            "judge_on_turned_world": judged_turned, "by_colour": by_colour, "by_shape": by_shape,
            "by_shape_template": by_template,
            "verdicts": [{"prompt": prompt(*cell), "colour": v.colour, "shape": v.shape, "template": v.template,
                          "background": v.background, "fit": v.fit} for v, cell in zip(verdicts, all_cells)],
        }, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
