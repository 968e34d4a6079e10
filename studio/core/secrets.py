"""Masking secrets (Hugging Face tokens, bearer credentials) before anything is stored, logged
or shown: one implementation, one mask."""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(r"(^|[_\-.])(token|password|passwd|secret|api[_\-]?key)$", re.IGNORECASE)
_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{20,}")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{16,}")
_TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN")


def _env_secrets() -> list[str]:
    # A token that does not look like `hf_...` is still known if the process was given one.
    return [v for v in (os.environ.get(n, "") for n in _TOKEN_ENV) if len(v) >= 8]


def redact(value: Any) -> Any:
    """A copy of `value` safe to store or show: token-like keys dropped, token strings masked.

    Keys such as `hf_token`, `token`, `password`, `api_key` are removed from mappings at any
    depth; any `hf_...` token, bearer credential or token this process was given (HF_TOKEN)
    inside a string is replaced by [REDACTED]. Other values are returned unchanged.
    """
    if isinstance(value, Mapping):
        return {k: redact(v) for k, v in value.items() if not (isinstance(k, str) and _SECRET_KEY.search(k))}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        text = _HF_TOKEN.sub(REDACTED, value)
        text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
        for secret in _env_secrets():
            text = text.replace(secret, REDACTED)
        return text
    return value
