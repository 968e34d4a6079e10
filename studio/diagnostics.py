"""The error catalogue: known failure modes with stable codes and plain advice.

The engine, the CLI, the worker and the UI all speak these codes, so a user sees the same
explanation wherever a problem shows up, and the README's troubleshooting table is built
from the same entries. Every code the engine or the worker writes is one of these
(tests/test_diagnostics_codes.py finds them in the source); zh-CN.yaml translates each.
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.core.vocab import next_lower_tier  # noqa: F401  (re-exported for the engine)


@dataclass(frozen=True)
class Diagnosis:
    code: str
    title: str
    advice: str


CATALOGUE = {d.code: d for d in [
    Diagnosis("CONFIG_INVALID", "The training settings are not valid",
              "Change the settings named in the message; nothing was started."),
    Diagnosis("RANK_TOO_LARGE", "LoRA rank larger than a targeted layer allows",
              "Lower lora.rank below the smallest targeted layer's size, or target other layers."),
    Diagnosis("GUIDANCE_UNSUPPORTED", "Training guidance set for a model without guidance embeddings",
              "This base model takes no guidance value (the message names it): remove training.guidance "
              "(leave it null)."),
    Diagnosis("BLOCK_OUT_OF_RANGE", "A chosen block does not exist in this model",
              "Pick block numbers below this model's block counts, which the message names (each model "
              "family has its own)."),
    Diagnosis("MODEL_MISSING", "The base model files cannot be found",
              "Download the model first, point model.base at a local diffusers folder, or use "
              "the built-in demo model."),
    Diagnosis("NO_IMAGES", "The dataset has no usable images",
              "Upload JPEG, PNG or WebP photos (at least 256 px on the short side) to the dataset."),
    Diagnosis("FAMILY_MISMATCH", "The base model is not of the family the settings name",
              "Set model.family to the family the message names (or auto), or choose a base model of "
              "the family you want; python -m studio families lists them."),
    Diagnosis("NO_INPUT_IMAGE", "An edit LoRA needs a picture to edit",
              "Choose an input image in the Results tab's try-it panel (JPEG, PNG or WebP) and run it again."),
    Diagnosis("NO_PAIRS", "This model trains edit LoRAs and the dataset has no pairs",
              "Give each target image its 'before' image in the dataset's control/ folder under the same "
              "name, or import a folder or zip with control/ and target/ subfolders."),
    Diagnosis("DATASET_CHECK", "The dataset check found something to improve",
              "Training goes on. The message names the images and what to do; the Dataset tab "
              "and python -m studio dataset check show the whole report."),
    Diagnosis("NAN_LOSS", "The loss became NaN or infinite",
              "Lower the learning rate (try 1e-4), keep max_grad_norm at 1.0, and use bf16 "
              "instead of fp16 or fp8. No checkpoint with NaN weights was saved."),
    Diagnosis("OUT_OF_MEMORY", "The GPU ran out of memory",
              "Choose the next lower memory tier, lower the resolution or batch size, or turn "
              "on gradient checkpointing."),
    Diagnosis("PROMPT_TRUNCATED", "A caption or prompt is longer than the text encoder's limit",
              "Shorten it: tokens past the limit the message names are ignored (each base model has its "
              "own; python -m studio families lists them)."),
    Diagnosis("CAPTIONER_UNAVAILABLE", "The captioning model is not available offline",
              "Download the captioner model once with internet access, or use the basic "
              "captioner (trigger word + class word + file name)."),
    Diagnosis("SAVE_FAILED", "Writing a checkpoint or LoRA file failed",
              "Free disk space or check the output folder's permissions; the previous "
              "checkpoint is intact and the job can resume from it."),
    Diagnosis("GPU_REQUIRED", "This setting needs a CUDA GPU",
              "Choose the CPU tier (fp32, adamw) or run on a machine with an NVIDIA GPU."),
    Diagnosis("PACKAGE_MISSING", "A package this setting needs is not installed",
              "Re-run bash scripts/setup.sh (or pip install -r requirements.txt in the studio's "
              "environment): it installs every package the settings can need."),
    Diagnosis("LORA_INVALID", "The written LoRA file did not validate",
              "This is a bug; please report it with the run's train.log."),
    Diagnosis("CACHE_BYPASSED", "Augmentation is on, so latents are not cached",
              "Expected: each step encodes a freshly augmented image. Turn augmentation off for "
              "the faster cached path."),
    Diagnosis("TEXT_ENCODERS_ON_CPU", "The text encoders do not fit in the GPU's free memory",
              "Nothing to do: captions are encoded on the CPU instead, once (the embeddings are cached), "
              "which is slower, not wrong. Close other programs using the GPU to encode them there."),
    Diagnosis("RESUMED", "The run continued from a checkpoint",
              "Nothing to do: training picked up where the checkpoint left off."),
    Diagnosis("NOTHING_TO_RESUME", "Resume was asked for, but the run has no checkpoint",
              "Training started from step 0. Set save.every so that future runs can resume."),
    Diagnosis("INTERNAL", "An unexpected error",
              "See train.log in the run folder for details, and report it if it repeats."),
    # Recorded by the worker, which watches the training process from outside.
    Diagnosis("KILLED", "The training process was killed",
              "Usually the computer ran out of memory (RAM) and the system stopped it, or someone "
              "ended the process. Close other programs or lower the resolution or batch size, then "
              "resume the job from its last checkpoint."),
    Diagnosis("INTERRUPTED", "Training was interrupted by a signal",
              "Resume the job to continue from its last checkpoint."),
    Diagnosis("WORKER_RESTARTED", "The studio's worker restarted while the job ran",
              "Resume the job to continue from its last checkpoint; steps after it are trained again."),
    Diagnosis("WORKER_SHUTDOWN", "The studio was shutting down while the job ran",
              "Resume the job once the studio runs again; it continues from its last checkpoint."),
    Diagnosis("SPAWN_FAILED", "The training process could not be started",
              "Read the message: usually the job asks for more GPUs than this worker has, or the run "
              "folder cannot be written. Fix that, then start the job again."),
    Diagnosis("NOTHING_TO_COMPARE", "The run has nothing for a report card to compare",
              "The message says what is missing: a report card needs a finished run with its config.yaml "
              "and at least one kept checkpoint or its final LoRA files."),
    Diagnosis("INVALID_OUTPUT", "Training ended without usable LoRA files",
              "Check the free disk space and train.log, then run the job again; report it if it repeats."),
    Diagnosis("PROCESS_EXITED", "The training process ended unexpectedly",
              "The message quotes the end of train.log. Run the job again, and report it with "
              "train.log if it repeats."),
    Diagnosis("BAD_METRICS_LINE", "A progress line from training could not be read",
              "Usually harmless: the charts miss one point. If it repeats, check the free disk space "
              "and report it with train.log."),
]}


class StudioError(Exception):
    """An error with a catalogue code; `str()` is the specific message."""

    def __init__(self, code: str, message: str):
        if code not in CATALOGUE:
            raise KeyError(f"unknown diagnostic code {code}")
        self.code = code
        self.message = message
        super().__init__(message)

    @property
    def advice(self) -> str:
        return CATALOGUE[self.code].advice

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "advice": self.advice}


def explain(code: str) -> Diagnosis:
    return CATALOGUE.get(code, CATALOGUE["INTERNAL"])


def known_code(code: object) -> str:
    """`code` if the catalogue has it, else INTERNAL: a code that reaches the job store or the
    events from outside (a training process's error event) is always one the catalogue explains."""
    return code if isinstance(code, str) and code in CATALOGUE else "INTERNAL"
