"""Publish a finished run to the Hugging Face Hub: both LoRA files, config, samples, model card.

`model_card(run_dir)` (studio/model_card.py) builds the README.md; `publish_run(run_dir, repo_id, ...)`
uploads it all in one commit with `HfApi`.

The token is secret: it comes from the argument or `HF_TOKEN`, is only ever handed to the HTTP
client, is never logged or written to disk, and every error message that leaves this module has
anything shaped like a token (`hf_...`) replaced by `hf_***`. Errors are `PublishError` with a
message a user can act on (no token, invalid name, unauthorised, network unreachable).

Only the standard library and PyYAML load at import; huggingface_hub loads when publishing, and
torch never (safetensors metadata is read from the file header directly).
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from studio.core.secrets import redact
# The run's files and its card (studio/model_card.py), under the names this module always had.
from studio.model_card import (  # noqa: F401
    REPO_ID_PATTERN, TAGS, PublishError, _base_model, _family, _lora_files, _read_config, _report_grids, _samples,
    model_card, read_safetensors_metadata, shareable_config_text,
)

log = logging.getLogger(__name__)

# progress(done, total, message): called before each stage and once at the end.
Progress = Callable[[int, int, str], None]

DEFAULT_ENDPOINT = "https://huggingface.co"


# ---------------------------------------------------------------------------------------------
# Publishing


def publish_run(run_dir, repo_id: str, token: str | None = None, private: bool = True,
                endpoint: str | None = None, progress: Progress | None = None, timeout: float = 10.0) -> str:
    """Upload a finished run to the model repo `repo_id` (created if missing); returns its URL.

    One commit: both LoRA files, config.yaml (with names instead of local paths), samples/*.png
    and README.md (`model_card`).
    `timeout` bounds the connectivity/credentials check made before anything is uploaded.
    """
    run = Path(run_dir)
    report = progress or (lambda done, total, message: None)
    token = token or os.environ.get("HF_TOKEN") or None
    if not token:
        raise PublishError("No Hugging Face token: set HF_TOKEN (on a Space: a secret named HF_TOKEN) or enter one; "
                           "create a token with write access at https://huggingface.co/settings/tokens")
    repo_id = (repo_id or "").strip()
    if not REPO_ID_PATTERN.fullmatch(repo_id) or re.search(r"(^|/)[.-]|[.-]($|/)|--|\.\.", repo_id):
        raise PublishError(f"Invalid repo name {redact(repo_id)!r}: use 'username/name' with letters, digits, '-', '_' "
                           "or '.', at most 96 characters, not starting or ending with '-' or '.'")
    lora, comfy = _lora_files(run)
    from studio.verify import failures, verify_run

    failed = failures(verify_run(run))
    if failed:  # proven before it ships: a file a loader would misread is never uploaded
        raise PublishError("Not published: the LoRA files failed verification. " + " ".join(failed)
                           + f" Run `python -m studio verify {run.name}` in the runs folder for the whole checklist.")
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")

    from huggingface_hub import constants
    if constants.is_offline_mode():
        raise PublishError("Publishing needs the network but HF_HUB_OFFLINE is set; unset it and try again")

    report(0, 3, "checking the token")
    user = _whoami(endpoint, token, timeout)
    if "/" not in repo_id:
        repo_id = f"{user}/{repo_id}"

    card = model_card(run, repo_id=repo_id)
    config_bytes = shareable_config_text(run).encode()
    files = [(p.name, p) for p in (lora, comfy) if p] + [("config.yaml", config_bytes), ("README.md", card.encode())]
    files += [(s["path"], run / s["path"]) for s in _samples(run)]
    files += [(path, run / path) for path, _ in _report_grids(run)]
    log.info("publishing %s (%d files) to %s", run.name, len(files), repo_id)
    try:
        from huggingface_hub import CommitOperationAdd, HfApi

        api = HfApi(endpoint=endpoint, token=token, library_name="flux-lora-studio")
        report(1, 3, f"creating {repo_id}")
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        repo_id = url.repo_id
        report(2, 3, f"uploading {len(files)} files")
        api.create_commit(repo_id, repo_type="model", commit_message=f"Upload LoRA {lora.stem} (Flux LoRA Studio)",
                          operations=[CommitOperationAdd(path_in_repo=p, path_or_fileobj=src) for p, src in files])
    except PublishError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear, token-free message
        raise PublishError(_explain(exc, repo_id, endpoint)) from None
    report(3, 3, "done")
    return f"{endpoint}/{repo_id}"


def _whoami(endpoint: str, token: str, timeout: float) -> str:
    """The token's user name; fails fast (timeout) on no network, clearly on a bad or read-only token."""
    request = urllib.request.Request(f"{endpoint}/api/whoami-v2", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            info = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise PublishError("Hugging Face rejected the token (401 Unauthorized): it is invalid or expired; "
                               "create a new one with write access at https://huggingface.co/settings/tokens") from None
        raise PublishError(f"Hub check of the token failed: HTTP {exc.code} from {endpoint}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PublishError(f"Cannot reach {endpoint} ({redact(str(reason)) or type(exc).__name__}); "
                           "check the internet connection or proxy and try again") from None
    except ValueError:
        raise PublishError(f"{endpoint} did not answer like the Hugging Face Hub (whoami is not JSON)") from None
    role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise PublishError("The Hugging Face token is read-only: publishing needs a token with write access "
                           "(https://huggingface.co/settings/tokens)")
    name = info.get("name")
    if not isinstance(name, str) or not name:
        raise PublishError(f"{endpoint} did not say which user the token belongs to")
    return name


def _explain(exc: Exception, repo_id: str, endpoint: str) -> str:
    """A short, token-free message for a failure inside huggingface_hub."""
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled

    status = getattr(getattr(exc, "response", None), "status_code", None)
    first_line = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    if isinstance(exc, OfflineModeIsEnabled):
        return "Publishing needs the network but HF_HUB_OFFLINE is set; unset it and try again"
    if isinstance(exc, HFValidationError):
        return f"Invalid repo name {redact(repo_id)!r}: {first_line}"
    if isinstance(exc, HfHubHTTPError) and status == 401:
        return "Hugging Face rejected the token (401 Unauthorized): check it is valid and has write access"
    if isinstance(exc, HfHubHTTPError) and status == 403:
        return (f"The token may not write to {repo_id} (403 Forbidden): use a write token of that user "
                "or an organisation member with write rights")
    if isinstance(exc, HfHubHTTPError) and status == 404:
        return f"{repo_id} was not found on {endpoint} and could not be created (404)"
    if isinstance(exc, HfHubHTTPError):
        return f"The Hub refused the upload to {repo_id} (HTTP {status}): {first_line}"
    if type(exc).__module__.startswith(("httpx", "httpcore")) or isinstance(exc, (OSError, TimeoutError)):
        return f"Lost the connection to {endpoint} while publishing ({type(exc).__name__}); try again"
    if isinstance(exc, ValueError) and "README" in str(exc):
        return f"The Hub rejected the model card metadata: {first_line}"
    return f"Publishing to {repo_id} failed: {type(exc).__name__}: {first_line}"
