"""A job as the worker and the UI see it: a typed record whose config is a `TrainConfig`.

The job store keeps the config as YAML; `Job.from_row` turns a row back into a record. A
config that no longer validates (written by an older studio) does not make the job list
unreadable: the record keeps `config=None` and `config_problem` says why, and the worker
fails such a job with that message instead of starting it.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from studio.config import ConfigError, TrainConfig
from studio.core.secrets import redact
from studio.core.vocab import KIND_TRAIN

_FLAGS = ("resume", "retry_tier", "cancel_requested", "sample_requested", "save_requested")


def validated_config(config: TrainConfig | Mapping[str, Any]) -> TrainConfig:
    """`config` as a TrainConfig, secrets removed first. Raises ConfigError naming each bad key
    (its messages never quote a secret, since the secrets are gone before checking)."""
    if isinstance(config, TrainConfig):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict or a TrainConfig, got {type(config).__name__}")
    return TrainConfig.from_dict(redact(dict(config)))


@dataclass(frozen=True)
class Job:
    id: int
    name: str
    kind: str
    config: TrainConfig | None
    request: dict[str, Any] = field(default_factory=dict)  # what a non-training kind works on
    config_problem: str | None = None
    status: str = "queued"
    resume: bool = False
    resume_from: str | None = None
    step: int = 0
    max_steps: int | None = None
    it_s: float | None = None
    eta_s: float | None = None
    loss: float | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    pid: int | None = None
    worker_id: str | None = None
    run_dir: str | None = None
    exit_code: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    advice: str | None = None
    files: list[str] = field(default_factory=list)
    last_checkpoint: str | None = None
    attempts: int = 0
    parent_job_id: int | None = None
    retry_tier: bool = False
    cancel_requested: bool = False
    sample_requested: bool = False
    save_requested: bool = False
    events_offset: int = 0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        data = dict(row)
        try:
            data["config"], data["config_problem"] = validated_config(yaml.safe_load(data.pop("config")) or {}), None
        except (ConfigError, TypeError, yaml.YAMLError) as exc:
            problems = getattr(exc, "problems", None) or [str(exc)]
            data["config"], data["config_problem"] = None, "; ".join(problems)
        data["files"] = json.loads(data["files"])
        data["request"] = json.loads(data.get("request") or "{}")
        data.setdefault("kind", KIND_TRAIN)
        for flag in _FLAGS:
            data[flag] = bool(data[flag])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def as_dict(self) -> dict[str, Any]:
        """The plain-dict view (config as a dict) for code that still reads rows by key."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["config"] = self.config.to_dict() if self.config is not None else {}
        return out

    def __getitem__(self, key: str) -> Any:
        """Read access by column name, as the store's rows had (`job["run_dir"]`)."""
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None
