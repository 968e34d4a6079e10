"""Plain functions behind the Dataset, Captions and Train tabs, one module per tab (Monitor and
Results: studio/ui/runs.py). Every public name stays importable from `studio.ui.handlers`.

Each takes explicit values (the data folder, the chosen dataset, the UI language) and returns
plain values the tab modules put into components. None of them imports gradio or torch, so
they are unit-tested directly; errors come back as readable messages through `UserError`,
which the tab wiring turns into a status line instead of a traceback.
"""

from studio.config import ConfigError, TrainConfig, resolve
from studio.i18n import md_text, t
from studio.ui.handlers.captions import (bulk_edit, caption_images, caption_limit, caption_note, caption_table,
                                         caption_warnings, read_caption, save_caption)
from studio.ui.handlers.checks import HUB_ID_RE, check_config, problems_markdown, source_problems, token_problems
from studio.ui.handlers.common import NAME_RE, UserError, dataset_dir, datasets_root
from studio.ui.handlers.dataset import (create_dataset, list_datasets, newest_dataset, remove_images, run_report,
                                        upload_files)
from studio.ui.handlers.form import (BASIC, BASIC_KEYS, CHOICE_FIELDS, NOT_IN_ADVANCED, advanced_settings,
                                     form_names, get_key, kind_of, parse_widget, set_key, setting_keys,
                                     setting_values, widget_value)
from studio.ui.handlers import model_choice
from studio.ui.handlers.train import (DEMO_RUN, build_config, detect_gpu, export_config, fields_from_config,
                                      form_model, gpu_message, import_config, licence_text, preset_text,
                                      preset_values, proposed_config, start_training, tier_text)

__all__ = ["BASIC", "BASIC_KEYS", "CHOICE_FIELDS", "DEMO_RUN", "HUB_ID_RE", "NAME_RE",
           "NOT_IN_ADVANCED", "ConfigError", "TrainConfig", "UserError", "advanced_settings",
           "build_config", "bulk_edit", "caption_images", "caption_limit", "caption_note", "caption_table", "caption_warnings",
           "check_config", "create_dataset", "dataset_dir", "datasets_root", "detect_gpu", "export_config",
           "fields_from_config", "form_model", "form_names", "get_key", "gpu_message", "import_config", "kind_of",
           "licence_text", "list_datasets", "md_text", "model_choice", "newest_dataset", "parse_widget", "preset_text",
           "preset_values", "problems_markdown", "proposed_config", "read_caption", "remove_images", "resolve",
           "run_report", "save_caption", "set_key", "setting_keys", "setting_values", "source_problems",
           "start_training", "t", "tier_text", "token_problems", "upload_files", "widget_value"]
