"""The training settings: schema (schema.py), reading (load.py), presets and `resolve`
(presets.py), problems found without a model (validate.py, problems.py), the schema described
for the UI and docs (docs.py), GPU memory tiers (gpu.py). Every name used from `studio.config`
is importable from here."""

from .docs import KINDS, Setting, config_reference, field_help, help_rows, setting, settings
from .gpu import MEMORY_TIERS, detect_tier, tier_for_memory
from .load import deep_merge, duplicate_keys, parse_override, parse_yaml, read_text
from .presets import PRESETS_DIR, REPO_ROOT, Preset, list_presets, load_preset, resolve
from .problems import MESSAGES, ConfigError, Problem
from .schema import (Augmentation, DatasetConfig, LogConfig, LoraConfig, MemoryConfig, ModelConfig, OptimizerConfig,
                     SampleConfig, SaveConfig, ScheduleConfig, TrainConfig, TrainingConfig, opt)
from .validate import check, gpu_only_settings, problems, validate

__all__ = ["KINDS", "MEMORY_TIERS", "MESSAGES", "PRESETS_DIR", "REPO_ROOT", "Augmentation",
           "ConfigError", "DatasetConfig", "LogConfig", "LoraConfig", "MemoryConfig", "ModelConfig",
           "OptimizerConfig", "Preset", "Problem", "SampleConfig", "SaveConfig", "ScheduleConfig", "Setting",
           "TrainConfig", "TrainingConfig", "check", "config_reference", "deep_merge", "detect_tier",
           "duplicate_keys", "field_help", "gpu_only_settings", "help_rows", "list_presets", "load_preset",
           "opt", "parse_override", "parse_yaml", "problems", "read_text", "resolve", "setting", "settings",
           "tier_for_memory", "validate"]
