"""What is wrong with a config, as data: `Problem(key, code, params)`.

Each problem names the setting (or file) it is about, a code, and the values its message needs.
The English wording of every code lives here (`MESSAGES`, the one source: the UI's English
catalogue is generated from it, studio/i18n/zh-CN.yaml translates it), so the command line and
each UI language render the same problem without parsing English back. No torch import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# code -> English "what to change", formatted with the problem's params.
MESSAGES: dict[str, str] = {
    # reading a file or a value
    "text": "{text}",
    "file_not_found": "file not found",
    "is_folder": "this is a folder, not a config file; give the path of a YAML file (for example my.yaml).",
    "unreadable": "cannot read it as UTF-8 text ({error})",
    "bad_yaml": "not valid YAML{where}: {detail}",
    "not_a_mapping_file": "expected a mapping of settings, got {type}",
    "duplicate_key": "'{dotted}' is given twice, at line {first} and line {second}; keep one "
                     "(only one of them would be used).",
    "not_a_mapping": "expected a mapping, got {type} ({value!r:.60})",
    "unknown_setting": "unknown setting. Did you mean '{suggestion}'?",
    "unknown_setting_list": "unknown setting. Valid keys: {valid}.",
    "wrong_type": "expected {type}, got {value!r:.60}",
    "not_allowed": "{value!r:.60} is not allowed; choose one of {choices}.",
    "not_allowed_near": "{value!r:.60} is not allowed; choose one of {choices}. Did you mean '{suggestion}'?",
    "bad_override": "expected key=value, e.g. lora.rank=32",
    "empty_override_key": "the key is empty",
    # presets
    "preset_not_found": "preset '{name}' not found. Valid presets: {valid}.",
    "preset_not_found_near": "preset '{name}' not found. Did you mean '{suggestion}'? Valid presets: {valid}.",
    "tier_not_found": "memory tier '{name}' not found. Valid memory tiers: {valid} (or auto: chosen from the "
                      "detected GPU).",
    "preset_unknown_keys": "unknown preset keys {keys}",
    "preset_unknown_family": "families: {names} is not a model family; use names from: {valid}.",
    "preset_wrong_family": "the {name} preset is not for the {family} model family; its presets: {valid}.",
    # settings that do not fit together (validate)
    "multiple_of_16": "{value} must be a multiple of 16 and at least 64 (try {suggest}).",
    "resolution_too_large": "{value} is larger than 4096; use 512, 768 or 1024.",
    "sample_size": "{value} must be a multiple of 16 between 64 and 4096.",
    "at_least_1": "must be at least 1 (got {value}).",
    "rank_too_large": "{value} is far too large; 4–128 is the useful range.",
    "too_many_steps": "{value} is too many; FLUX LoRAs need 500–5000.",
    "zero_or_more": "must be 0 or more (got {value}).",
    "alpha_positive": "must be positive (got {value}); alpha = rank is a safe choice.",
    "unit_interval": "must be in [0, 1) (got {value}).",
    "augmentation": "{detail}",
    "bad_lr": "{value} is not a usable learning rate (use 1e-4 for AdamW, 1.0 for Prodigy).",
    "betas": "expected two numbers in [0, 1), got {value}.",
    "grad_norm": "must be 0 (off) or positive.",
    "cyclic_lrs": "must be positive and below schedule.cyclic_max_lr.",
    "min_lr": "{value} must be below optimizer.lr ({lr}).",
    "warmup": "{warmup} must be below schedule.max_steps ({steps}).",
    "shift_positive": "must be positive (FluxGym uses 3.1582).",
    "std_positive": "must be positive.",
    "ema_decay": "must be between 0 and 1 (0.99 is common).",
    "block_numbers": "block numbers start at 0.",
    "run_name": "{value!r} must be a plain name (letters, digits, - and _).",
    "needs_gpu": "{value} needs a CUDA GPU; use {alternative} on CPU.",
    "mixed_formats": "fp16 with a bf16 base mixes formats; use bf16 for both.",
    "prodigy_lr": "Prodigy finds its own step size; set lr to 1.0 (got {value}).",
    "no_prompts": "give at least one prompt, or set sample.every to 0.",
    "unknown_family": "{value!r:.60} is not a model family the studio knows; choose one of {valid}.",
    "unknown_family_near": "{value!r:.60} is not a model family the studio knows. Did you mean '{suggestion}'? "
                           "Choose one of {valid}.",
    # what only the UI checks (studio/ui)
    "model_source": "{value!r} is not 'demo', a Hugging Face model id (owner/name) or a local model folder in "
                    "diffusers layout (with model_index.json).",
    "transformer_file": "{value!r} is not an existing .safetensors file.",
    "token_in_setting": "contains what looks like an access token; never type tokens into settings (set the "
                        "HF_TOKEN environment variable instead).",
}


@dataclass(frozen=True)
class Problem:
    """One thing to change. `key`: the dotted setting, or the file or option it is about ('' when
    it is about none); `code`: a key of MESSAGES; `params`: the values its message needs."""

    key: str
    code: str
    params: dict[str, Any] = field(default_factory=dict)

    def detail(self, templates: dict[str, str] | None = None) -> str:
        """What to change, worded by `templates` (code -> template; English by default)."""
        return (templates or MESSAGES)[self.code].format(**self.params)

    def english(self) -> str:
        """'key: what to change', as the command line prints it."""
        return f"{self.key}: {self.detail()}" if self.key else self.detail()


def as_problem(item: "Problem | str") -> Problem:
    return item if isinstance(item, Problem) else Problem("", "text", {"text": str(item)})


class ConfigError(ValueError):
    """A config that cannot be used. `items`: every Problem; `problems`: the same in English
    ('key: what to change'), which the command line prints."""

    def __init__(self, problems: "list[Problem | str] | Problem | str"):
        items = problems if isinstance(problems, list) else [problems]
        self.items = [as_problem(p) for p in items]
        self.problems = [p.english() for p in self.items]
        super().__init__("\n".join(self.problems))
