"""A try-it job's child process: `python -m studio.jobs.tryit REQUEST.json --run-dir FOLDER --data-dir DATA`.

The worker runs it for jobs of kind "tryit" (studio/jobs/kinds.py), so drawing waits its turn
behind training instead of competing with it for GPU memory, shows in the job list and can be
cancelled. It loads the base model and the LoRA, then draws the same prompt and seed twice:
without the LoRA and with it at the chosen strength, on the run's sample settings (size, steps,
guidance, guidance against the empty prompt). An edit LoRA edits the request's input image (`image`, kept as before.png beside the
two results). It reports like training does: metrics.jsonl events and the same exit codes
(studio/core/vocab.py); it also writes status.json, which the Results tab polls.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from studio.core.vocab import EVENT_DONE, EVENT_ERROR, EVENT_SAMPLE, EVENT_START, EVENT_STEP, EXIT_OK, FAILED, SUCCEEDED
from studio.diagnostics import StudioError
from studio.jobs.child import code_of, start

DRAWS = ("without", "with")


def run(request: dict, out: Path, reporter, data_dir: Path | None = None) -> None:
    import torch

    from studio.models import inspect_model, load_pipeline

    info = inspect_model(request["base"], request.get("revision", ""), data_dir)
    pipe = load_pipeline(info)
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    device = pipe.device
    reporter.emit(EVENT_START, max_steps=len(DRAWS), start_step=0, num_images=0, model=request["base"],
                  device=str(device))

    size = (int(request["width"]), int(request["height"]))
    image_args = input_image_args(info.model_family, lora_mode(request["lora"], info.model_family),
                                  request.get("image") or "", size, out)

    def draw(step: int, name: str) -> None:
        kwargs = dict(prompt=request["prompt"], num_inference_steps=int(request["steps"]),
                      width=size[0], height=size[1],
                      generator=torch.Generator(device).manual_seed(int(request["seed"])), **image_args)
        if info.guidance_embeds:
            kwargs["guidance_scale"] = float(request["guidance"])
        kwargs.update(info.model_family.true_cfg_args(float(request.get("true_cfg", 1.0))))
        pipe(**kwargs).images[0].save(out / f"{name}.png")
        reporter.emit(EVENT_SAMPLE, step=step, path=f"{name}.png", prompt=request["prompt"], seed=int(request["seed"]))
        reporter.emit(EVENT_STEP, step=step, max_steps=len(DRAWS))

    draw(1, "without")
    pipe.load_lora_weights(request["lora"], adapter_name="trained")
    pipe.set_adapters(["trained"], adapter_weights=[float(request["strength"])])
    draw(2, "with")


def lora_mode(path: str, family) -> str:
    """"edit" or "text-to-image": what the LoRA file's run trained (its `training_mode` metadata)."""
    from studio.model_card import read_safetensors_metadata, trained_mode

    return trained_mode({"model_family": family.name, **read_safetensors_metadata(Path(path))})


def input_image_args(family, mode: str, path: str, size: tuple[int, int], out: Path) -> dict:
    """The pipeline's input-image arguments: the picture to edit for an edit LoRA (kept as
    before.png), nothing for a text-to-image one."""
    from studio.families.base import EDIT

    if mode != EDIT:
        return {}
    if not path:
        raise StudioError("NO_INPUT_IMAGE", "This LoRA edits pictures: give an input image to edit.")
    from PIL import Image

    try:
        with Image.open(path) as im:
            image = im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise StudioError("NO_INPUT_IMAGE", f"The input image {Path(path).name} cannot be read ({exc}); "
                          "choose a JPEG, PNG or WebP picture.") from None
    image.save(out / "before.png")
    return family.sample_image_args(image, size)


def main(argv: list[str]) -> int:
    child = start(argv, "python -m studio.jobs.tryit", "where to write the images (default: the request's folder)")
    out, reporter = child.out, child.reporter
    status = out / "status.json"
    try:
        run(child.request, out, reporter, child.data_dir)
        files = [f"{name}.png" for name in DRAWS]
        reporter.emit(EVENT_DONE, status=SUCCEEDED, files=files)
        before = out / "before.png"
        status.write_text(json.dumps({"state": "done", "with": str(out / "with.png"),
                                      "without": str(out / "without.png"),
                                      "before": str(before) if before.is_file() else None}))
        return EXIT_OK
    except Exception as exc:  # the UI shows this line; the traceback stays in the log
        traceback.print_exc()
        code, exit_code = code_of(exc)
        message = f"{exc.__class__.__name__}: {exc}"
        reporter.emit(EVENT_ERROR, code=code, message=message)
        reporter.emit(EVENT_DONE, status=FAILED, files=[])
        status.write_text(json.dumps({"state": "failed", "error": message}))
        return exit_code
    finally:
        reporter.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
