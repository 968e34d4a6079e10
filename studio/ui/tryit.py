"""The Results tab's try-it run, as a child process: `python -m studio.ui.tryit REQUEST.json`.

It loads the base model and the LoRA, then draws the same prompt and seed twice: with the
LoRA at the chosen strength and without it. torch is imported only here, never in the UI
process. Writes with.png, without.png and finally status.json (which the UI polls).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def run(request: dict) -> None:
    import torch

    from studio.models import inspect_model, load_pipeline

    out = Path(request["out"])
    info = inspect_model(request["base"])
    pipe = load_pipeline(info)
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    device = pipe.device

    def draw(name: str) -> None:
        kwargs = dict(prompt=request["prompt"], num_inference_steps=int(request["steps"]),
                      width=int(request["width"]), height=int(request["height"]),
                      generator=torch.Generator(device).manual_seed(int(request["seed"])))
        if info.guidance_embeds:
            kwargs["guidance_scale"] = 3.5
        pipe(**kwargs).images[0].save(out / f"{name}.png")

    draw("without")
    pipe.load_lora_weights(request["lora"], adapter_name="trained")
    pipe.set_adapters(["trained"], adapter_weights=[float(request["strength"])])
    draw("with")


def main(argv: list[str]) -> int:
    request_path = Path(argv[0])
    request = json.loads(request_path.read_text(encoding="utf-8"))
    status = request_path.parent / "status.json"
    try:
        run(request)
        status.write_text(json.dumps({"state": "done", "with": str(request_path.parent / "with.png"),
                                      "without": str(request_path.parent / "without.png")}))
        return 0
    except Exception as exc:  # the UI shows this line; the traceback stays in tryit.log
        import traceback

        traceback.print_exc()
        status.write_text(json.dumps({"state": "failed", "error": f"{exc.__class__.__name__}: {exc}"}))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
