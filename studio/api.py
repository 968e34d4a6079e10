"""The studio's documented API: what a script or an agent (through MCP) can do without the page.

Each public method of `StudioTools` (its dataset tools in `DatasetTools`) is one endpoint, answering
JSON text (`/gradio_api/call/<name>` for gradio clients) and, with `python app.py --mcp`, one MCP tool of the same name; its docstring is the
tool's description. The tools are stateless (every call names its dataset or job), reuse the
handlers the page uses (same checks, same messages) and return plain JSON. The page's own events
(timers, refreshes, the page load) are made private by `expose`, so they are neither in the API
documentation nor tools. Tokens never pass through here: publishing stays in the page.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import hashlib
import inspect
import json
import re
import tempfile
from pathlib import Path
from typing import Any

# A file handed back inline (base64) at most this large; bigger ones are fetched from the Results tab.
MAX_INLINE_BYTES = 256 * 1024**2
DATA_URI = re.compile(r"^data:(?P<mime>[\w.+/-]*)(?:;[\w=.-]+)*;base64,(?P<data>.*)$", re.S)
MIME_SUFFIX = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/bmp": ".bmp",
               "image/tiff": ".tif", "application/zip": ".zip", "application/x-zip-compressed": ".zip",
               "text/plain": ".txt"}
JOB_FIELDS = ("id", "name", "status", "step", "max_steps", "loss", "it_s", "eta_s", "error_code",
              "error_message", "advice")


class ToolError(Exception):
    """A refused call: the message says what was wrong and what to do."""


def _plain(text: str) -> str:
    """Handler messages are page markdown; tool answers are plain text."""
    return re.sub(r"\*\*|\\(?=[\\`*_{}\[\]()#+.!-])", "", text).strip()


def _tool(method):
    """One endpoint: the answer as JSON text (what MCP clients read), and the page's UserError
    (or the job store's refusals) as one clear gradio error instead of a traceback."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        import gradio as gr

        from studio.jobs import JobNotFound, JobStateError
        from studio.ui.handlers import UserError

        try:
            return json.dumps(method(*args, **kwargs), ensure_ascii=False)
        except (UserError, ToolError, JobStateError) as exc:
            raise gr.Error(_plain(str(exc)), print_exception=False) from None
        except JobNotFound:
            raise gr.Error("No such job: call list_jobs for the job ids.", print_exception=False) from None

    call.__signature__ = inspect.signature(method).replace(return_annotation=str)
    return call


class DatasetTools:
    """The dataset tools, bound to one data folder (StudioTools adds training, jobs and results)."""

    def __init__(self, data_dir: str | Path, max_upload_mb: int | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.max_upload_mb = max_upload_mb  # the page's cap on one upload, for add_images too

    # ------------------------------------------------------------------ datasets

    def list_datasets(self) -> list[dict]:
        """List the datasets: each with its name, number of images and number of captioned images."""
        from studio.data.ingest import list_dataset
        from studio.ui import handlers as h

        out = []
        for name in h.list_datasets(self.data_dir):
            items = list_dataset(h.dataset_dir(self.data_dir, name))
            out.append({"name": name, "images": len(items), "captioned": sum(1 for i in items if i.caption)})
        return out

    def create_dataset(self, name: str) -> dict:
        """Create an empty dataset (a no-op when it exists).

        Args:
            name: letters, digits, '-' and '_' (spaces become '-'), e.g. "my-dog".
        """
        from studio.ui import handlers as h

        created, message = h.create_dataset(self.data_dir, name)
        return {"name": created, "message": _plain(message)}

    def add_images(self, dataset: str, files: list[str], names: list[str] | None = None) -> dict:
        """Add photos (or zip files of photos and .txt captions) to a dataset, with the page's checks.

        Args:
            dataset: the dataset's name (see list_datasets).
            files: each file as a data URI, "data:image/jpeg;base64,..." (png, jpeg, webp, bmp, tiff, zip, txt).
            names: optional file names, one per file (a caption .txt pairs with the image of the same name).
        """
        from studio.ui import handlers as h

        folder = h.dataset_dir(self.data_dir, dataset)  # refuses an unknown dataset first
        if not files:
            raise ToolError("No files given: pass each photo as a data URI (data:image/jpeg;base64,...).")
        with tempfile.TemporaryDirectory(prefix="studio-api-") as tmp:
            paths = [self._decode_upload(Path(tmp), i, data, (names or [])[i] if i < len(names or []) else None)
                     for i, data in enumerate(files)]
            message = h.upload_files(self.data_dir, folder.name, [str(p) for p in paths], self.max_upload_mb)
        return {"dataset": folder.name, "message": _plain(message), "datasets": self.list_datasets()}

    @staticmethod
    def _decode_upload(folder: Path, index: int, data: str, name: str | None) -> Path:
        match = DATA_URI.match(data or "")
        if not match:
            raise ToolError(f"File {index + 1} is not a data URI: send it as data:<type>;base64,<content>.")
        try:
            content = base64.b64decode(match["data"], validate=False)
        except (binascii.Error, ValueError):
            raise ToolError(f"File {index + 1}: its base64 content cannot be decoded.") from None
        suffix = MIME_SUFFIX.get(match["mime"].lower(), "")
        stem = Path(name).name if name else f"file-{index + 1:03d}{suffix}"
        path = folder / f"{index:03d}" / (stem or f"file-{index + 1:03d}{suffix}")
        path.parent.mkdir()
        path.write_bytes(content)
        return path

    def caption_dataset(self, dataset: str, captioner: str = "basic", trigger_word: str = "",
                        class_word: str = "", redo_all: bool = False) -> dict:
        """Caption a dataset's images (only those without a caption unless redo_all).

        Args:
            dataset: the dataset's name.
            captioner: "basic" (offline: trigger word, class word, words from the file name), "florence2" or "blip".
            trigger_word: the word that will call up the LoRA, e.g. "ohwx"; put first in every caption.
            class_word: what the photos show, e.g. "dog".
            redo_all: rewrite existing captions too.
        """
        from studio.ui import handlers as h

        message = h.caption_images(self.data_dir, dataset, captioner, trigger_word, class_word, "start", "", "",
                                   redo_all)
        return {"dataset": dataset, "message": _plain(message)}

    def check_dataset(self, dataset: str, resolution: int = 512, preset: str = "", trigger_word: str = "") -> dict:
        """The quality check: counts, sizes, buckets, duplicates, blur and caption warnings, with a plain summary.

        Args:
            dataset: the dataset's name.
            resolution: the training resolution to check against.
            preset: a subject preset (see list_options) whose advice applies, or "".
            trigger_word: the trigger word the captions should contain, or "".
        """
        from studio.ui import handlers as h

        from studio.data.report import format_report

        h.dataset_dir(self.data_dir, dataset)
        report = h.run_report(self.data_dir, dataset, preset or None, resolution, trigger_word or None)
        return {"summary": format_report(report), **report}



class StudioTools(DatasetTools):
    """The tools, bound to one data folder."""

    NAMES = ("list_datasets", "create_dataset", "add_images", "caption_dataset", "check_dataset", "list_options",
             "start_training", "list_jobs", "job_status", "cancel_job", "resume_job", "list_results", "get_file", "plan_training",
             "verify_job")

    # ------------------------------------------------------------------ training

    def list_options(self) -> dict:
        """What a job can be made of: base models, subject presets and memory tiers (with the detected one)."""
        from studio.config import MEMORY_TIERS, detect_tier, list_presets
        from studio.families import families

        published = [{"base": v.hub_id, "about": f"{v.title}: {v.description}"}
                     for family in families() for v in family.variants.values()]
        return {"models": [{"base": "demo", "about": "the built-in demo model (offline, any computer)"}, *published,
                           {"base": "<a local folder in diffusers layout>",
                            "about": "a model folder of any family above (python -m studio families)"}],
                "presets": list_presets("subject"), "tiers": list(MEMORY_TIERS), "detected_tier": detect_tier()}

    def plan_training(self, dataset: str, gpu: str = "", family: str = "") -> dict:
        """What fits before anything starts: proposed model family and variant, tier, resolution, steps;
        per tier peak memory, seconds per step, minutes and disk use, each figure with its source; and
        every family/variant with the tier it trains in on this GPU or the GPU memory it needs.

        Args:
            dataset: the dataset's name.
            gpu: plan for this GPU (e.g. "RTX 4090") instead of the one this computer has ("" = detected).
            family: plan this model (a model.family name such as "flux2-klein" or "flux1-schnell"); "" = the
                best that fits the GPU (an edit model for a dataset with before/after pairs).
        """
        from dataclasses import asdict

        from studio.plan import make_plan
        from studio.ui import handlers as h

        folder = h.dataset_dir(self.data_dir, dataset)
        detected = None if gpu else h.detect_gpu()
        try:
            plan = make_plan(folder, gpu or (detected[0] if detected else None), None if gpu else
                             (detected[1] if detected else None), family=family or None)
        except ValueError as exc:
            raise h.UserError(str(exc)) from None
        return asdict(plan)

    def start_training(self, dataset: str, run_name: str = "my-lora", preset: str = "", trigger_word: str = "",
                       base: str = "demo", tier: str = "", overrides: dict | None = None) -> dict:
        """Queue a training job; the background worker runs it. Returns the job id (see job_status).

        Args:
            dataset: the dataset's name.
            run_name: the LoRA's name (letters, digits, '-', '_').
            preset: a subject preset (see list_options), or "" for the defaults.
            trigger_word: the trigger word the captions use.
            base: "demo", a Hugging Face model id or a local model folder.
            tier: a memory tier (see list_options), or "" for the detected one.
            overrides: settings by dotted key, e.g. {"schedule.max_steps": 150, "lora.rank": 8}.
        """
        from studio.config import ConfigError, deep_merge, resolve
        from studio.ui import handlers as h

        if overrides is not None and not isinstance(overrides, dict):
            raise ToolError('overrides must be an object of dotted settings, e.g. {"schedule.max_steps": 150}.')
        user: dict = {}
        for key, value in (overrides or {}).items():
            h.set_key(user, str(key), value)
        folder = h.dataset_dir(self.data_dir, dataset)
        chosen = {"model": {"base": base or "demo"}, "dataset": {"path": str(folder / "images")},
                  "save": {"run_name": run_name or "my-lora"}}
        if trigger_word:
            chosen["dataset"]["trigger_word"] = trigger_word
        if (base or "demo") == "demo":  # the Train tab's short demo run, as proposed there
            proposal = copy.deepcopy(h.DEMO_RUN)
            if "schedule" in user and "warmup_steps" not in user["schedule"]:
                proposal["schedule"].pop("warmup_steps", None)  # fitted to the user's own schedule instead
            chosen = deep_merge(proposal, chosen)
        try:
            from studio.config import detect_tier

            cfg = resolve(deep_merge(chosen, user), preset=preset or None, tier=tier or detect_tier())
        except ConfigError as exc:
            raise ToolError("Settings refused:\n" + "\n".join(f"- {p}" for p in exc.problems)) from None
        job_id, message = h.start_training(self.data_dir, cfg)
        return {"job_id": job_id, "message": _plain(message)}

    def list_jobs(self) -> list[dict]:
        """Every job, newest first: id, name, status, step, loss."""
        from studio.ui import runs

        return [{k: job.get(k) for k in ("id", "name", "status", "step", "max_steps", "loss")}
                for job in runs.store(self.data_dir).list_jobs()]

    def job_status(self, job_id: int) -> dict:
        """A job's status, step, loss, speed, ETA, error and advice, and its newest samples.

        Args:
            job_id: the job's id (from start_training or list_jobs).
        """
        from studio.ui import runs

        store = runs.store(self.data_dir)
        job = store.get_job(int(job_id))
        samples = [self._relative(path) for path, _ in runs.samples(job, store.events(int(job_id), types=["sample"]))]
        return {k: job.get(k) for k in JOB_FIELDS} | {"samples": samples[:8], "files": self._files(job)}

    def cancel_job(self, job_id: int) -> dict:
        """Cancel a queued or running job (it stops at the next step and keeps its last checkpoint).

        Args:
            job_id: the job's id.
        """
        from studio.ui import runs

        return {"job_id": int(job_id), "message": _plain(runs.control(self.data_dir, int(job_id), "cancel"))}

    def resume_job(self, job_id: int) -> dict:
        """Resume a cancelled, failed or interrupted job from its last checkpoint.

        Args:
            job_id: the job's id.
        """
        from studio.ui import runs

        return {"job_id": int(job_id), "message": _plain(runs.control(self.data_dir, int(job_id), "resume"))}

    # ------------------------------------------------------------------ results

    def list_results(self) -> list[dict]:
        """Finished jobs with their files (both LoRA layouts, the model card, the config)."""
        from studio.ui import runs

        jobs = runs.store(self.data_dir).list_jobs(statuses=["succeeded"])
        return [{"id": job["id"], "name": job["name"], "files": self._files(job)} for job in jobs]

    def verify_job(self, job_id: int) -> dict:
        """Proof of a finished job's LoRA files: each check (keys, shapes, ComfyUI's map, same ΔW) passed or why not.

        Args:
            job_id: the job's id.
        """
        from dataclasses import asdict

        from studio.ui import runs

        job = runs.store(self.data_dir).get_job(int(job_id))
        if job.get("status") != "succeeded":
            raise ToolError(f"Job {job_id} has not succeeded ({job.get('status')}): it has no LoRA files to verify.")
        checks = runs.verified(Path(job["run_dir"]))
        return {"job_id": int(job_id), "ok": bool(checks) and all(c.ok for c in checks),
                "checks": [asdict(c) for c in checks]}

    def get_file(self, job_id: int, file: str) -> dict:
        """One file of a finished job, inline: its name, size, SHA-256 and a base64 data URI.

        Args:
            job_id: the job's id.
            file: a file name from list_results, e.g. "my-lora.safetensors", "my-lora-comfyui.safetensors" or "README.md".
        """
        from studio.ui import runs

        job = runs.store(self.data_dir).get_job(int(job_id))
        found = {Path(p).name: Path(p) for p in runs.result_files(job)}
        path = found.get(Path(file or "").name)
        if path is None:
            raise ToolError(f"Job {job_id} has no file {file!r}; its files: {', '.join(found) or 'none yet'}.")
        size = path.stat().st_size
        if size > MAX_INLINE_BYTES:
            raise ToolError(f"{path.name} is {size / 1024**2:.0f} MB, more than one answer carries; download it "
                            "from the Results tab.")
        content = path.read_bytes()
        mime = "text/markdown" if path.suffix == ".md" else "application/octet-stream"
        return {"name": path.name, "bytes": size, "sha256": hashlib.sha256(content).hexdigest(),
                "data": f"data:{mime};base64,{base64.b64encode(content).decode('ascii')}"}

    def _files(self, job: dict) -> list[str]:
        from studio.ui import runs

        return [Path(p).name for p in runs.result_files(job)] if job.get("status") == "succeeded" else []

    def _relative(self, path: str) -> str:
        try:
            return Path(path).resolve().relative_to(self.data_dir).as_posix()
        except ValueError:
            return Path(path).name


def expose(demo, data_dir: str | Path, max_upload_mb: int | None = None) -> StudioTools:
    """Make the page's own events private, then add the tools as public endpoints of `demo`."""
    import gradio as gr

    for fn in demo.fns.values():
        fn.api_visibility = "private"
    tools = StudioTools(data_dir, max_upload_mb)
    with demo:
        for name in StudioTools.NAMES:
            # Not queued: gradio's MCP server then calls the tool in-process (behind the login that
            # studio.login.McpLogin puts on the endpoint) instead of through its HTTP client.
            gr.api(_tool(getattr(tools, name)), api_name=name, queue=False)
    return tools
