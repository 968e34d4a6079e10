"""`python -m studio verify`: good files pass; each kind of broken file is caught, naming the module.

Files are written by the studio's own writer (save_lora) from random LoRA layers, for a tiny
model folder and for FLUX.1 at full size (19 double / 38 single blocks: its key map is built on
the meta device, the layers are rank 1), then broken on purpose.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from studio.families.flux1_files import save_lora
from studio.families.flux1_shapes import FLUX1_FULL, meta_transformer
from studio.lora_files import read_metadata
from studio.models import build_demo_model
from studio.verify import verify_run

ROOT = Path(__file__).resolve().parents[1]
RANK = 2


def _random_layers(transformer, config_yaml: dict, rank: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """peft-style state dict for every module the run's settings target, with non-zero B."""
    from studio.config import TrainConfig
    from studio.families.flux1 import target_modules

    cfg = TrainConfig.from_yaml(yaml.safe_dump(config_yaml), "config.yaml")
    shapes = {n: (m.out_features, m.in_features) for n, m in transformer.named_modules()
              if isinstance(m, torch.nn.Linear)}
    g = torch.Generator().manual_seed(seed)
    layers = {}
    for name in target_modules(cfg.lora, transformer):
        out_features, in_features = shapes[name]
        layers[f"{name}.lora_A.weight"] = torch.randn(rank, in_features, generator=g) * 0.1
        layers[f"{name}.lora_B.weight"] = torch.randn(out_features, rank, generator=g) * 0.1
    return layers


def _run(tmp: Path, base: str, transformer, targets: str = "all_linear", rank: int = RANK) -> Path:
    run = tmp / "run"
    run.mkdir(parents=True)
    config = {"model": {"base": base}, "save": {"run_name": "subject"}, "lora": {"rank": rank, "alpha": 2 * rank,
                                                                                "targets": targets}}
    (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    layers = _random_layers(transformer, config, rank)
    save_lora(run, "subject", layers, rank, 2.0 * rank, {"base_model": base, "model_variant": "dev"})
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from diffusers import FluxTransformer2DModel

    tmp = tmp_path_factory.mktemp("verify")
    model = build_demo_model(tmp / "model", size="tiny", dev=True)
    transformer = FluxTransformer2DModel.from_pretrained(model / "transformer")
    return _run(tmp, str(model), transformer)


def _failed(checks) -> dict[str, list[str]]:
    return {c.title: c.problems for c in checks if not c.ok}


def _copy(run: Path, tmp: Path) -> Path:
    target = tmp / "broken"
    shutil.copytree(run, target)
    return target


def _edit(path: Path, change) -> None:
    tensors = load_file(path)
    metadata = read_metadata(path)
    change(tensors)
    save_file(tensors, path, metadata=metadata)


def _problems_after(run: Path, file: str, change, check_title: str) -> list[str]:
    """Break `file` of `run` with `change`, verify, and return the problems of the one check
    whose title starts with `check_title`."""
    _edit(run / file, change)
    failed = _failed(verify_run(run))
    return next(p for title, p in failed.items() if title.startswith(check_title))


def test_good_files_pass_every_check(tiny_run):
    checks = verify_run(tiny_run)
    assert len(checks) == 5 and _failed(checks) == {}, _failed(checks)
    assert "base model's own config" in checks[2].note


def test_cli_prints_the_checklist_and_exits_by_it(tiny_run, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "studio", "verify", str(tiny_run)], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("PASS") == 5 and "FAIL" not in ok.stdout
    broken = _copy(tiny_run, tmp_path)
    (broken / "subject-comfyui.safetensors").unlink()
    bad = subprocess.run([sys.executable, "-m", "studio", "verify", str(broken)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 1 and "FAIL" in bad.stdout and "no finished LoRA" in bad.stdout


def test_a_renamed_key_is_caught(tiny_run, tmp_path):
    broken = _copy(tiny_run, tmp_path)

    def rename(tensors):
        for end in ("lora_A.weight", "lora_B.weight"):
            tensors[f"transformer.transformer_blocks.0.attn.to_qq.{end}"] = tensors.pop(
                f"transformer.transformer_blocks.0.attn.to_q.{end}")

    _edit(broken / "subject.safetensors", rename)
    problems = "\n".join(sum(_failed(verify_run(broken)).values(), []))
    assert "transformer.transformer_blocks.0.attn.to_qq: unexpected key" in problems
    assert "transformer.transformer_blocks.0.attn.to_q: trained but missing" in problems


def test_a_renamed_comfyui_key_is_caught(tiny_run, tmp_path):
    broken = _copy(tiny_run, tmp_path)

    def rename(tensors):
        for end in ("lora_down.weight", "lora_up.weight", "alpha"):
            tensors[f"lora_unet_double_blocks_0_img_attention_qkv.{end}"] = tensors.pop(
                f"lora_unet_double_blocks_0_img_attn_qkv.{end}")

    comfy = _problems_after(broken, "subject-comfyui.safetensors", rename, "ComfyUI file's keys")
    assert any("lora_unet_double_blocks_0_img_attention_qkv: ComfyUI has no FLUX.1 layer" in p for p in comfy)


def test_swapped_q_and_k_rows_are_caught(tiny_run, tmp_path):
    broken = _copy(tiny_run, tmp_path)

    def swap(tensors):
        up = tensors["lora_unet_double_blocks_1_img_attn_qkv.lora_up.weight"]
        third = up.shape[0] // 3
        tensors["lora_unet_double_blocks_1_img_attn_qkv.lora_up.weight"] = torch.cat(
            [up[third:2 * third], up[:third], up[2 * third:]])

    delta = _problems_after(broken, "subject-comfyui.safetensors", swap, "both files give the same")
    assert any(p.startswith("transformer_blocks.1.attn.to_q: the two files' ΔW differ") for p in delta), delta
    assert any(p.startswith("transformer_blocks.1.attn.to_k:") for p in delta)
    assert not any("to_v" in p for p in delta)  # v was left where it was


def test_a_doubled_alpha_is_caught(tiny_run, tmp_path):
    broken = _copy(tiny_run, tmp_path)

    def double(tensors):
        tensors["lora_unet_single_blocks_0_linear2.alpha"] = tensors["lora_unet_single_blocks_0_linear2.alpha"] * 2

    delta = _problems_after(broken, "subject-comfyui.safetensors", double, "both files give the same")
    assert delta == ["single_transformer_blocks.0.proj_out: the ComfyUI file's ΔW is 2x the diffusers file's "
                     "(alpha or scale is wrong)"]


def test_a_wrong_shape_is_caught(tiny_run, tmp_path):
    broken = _copy(tiny_run, tmp_path)

    def widen(tensors):
        key = "transformer.single_transformer_blocks.1.proj_mlp.lora_A.weight"
        tensors[key] = torch.cat([tensors[key], torch.zeros(tensors[key].shape[0], 8)], dim=1)

    keys = _problems_after(broken, "subject.safetensors", widen, "diffusers file matches")
    assert any(p.startswith("transformer.single_transformer_blocks.1.proj_mlp: down/A takes") for p in keys), keys


def test_full_size_flux1_key_map(tmp_path, monkeypatch):
    """A FLUX.1 [dev] LoRA at full size passes against ComfyUI's full-size map; a block that
    FLUX.1 does not have (single block 38) is named."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = _run(tmp_path, "black-forest-labs/FLUX.1-dev", meta_transformer({**FLUX1_FULL, "guidance_embeds": True}),
               targets="attention", rank=1)
    checks = verify_run(run)
    assert _failed(checks) == {}, _failed(checks)
    assert "19 double, 38 single" in checks[2].note and "19 double, 38 single" in checks[3].note

    def out_of_range(tensors):
        for end in ("lora_down.weight", "lora_up.weight", "alpha"):
            tensors[f"lora_unet_single_blocks_38_linear1.{end}"] = tensors.pop(f"lora_unet_single_blocks_37_linear1.{end}")

    comfy = _problems_after(run, "subject-comfyui.safetensors", out_of_range, "ComfyUI file's keys")
    assert comfy == ["lora_unet_single_blocks_38_linear1: ComfyUI has no FLUX.1 layer by that name (the key would "
                     "not be loaded)"]


def test_the_results_tab_shows_the_checklist_and_hides_unproven_files(tiny_run, tmp_path):
    """Read from verify.json without torch; a broken run offers no LoRA download; every line
    has words in both languages."""
    from studio.i18n import catalogue
    from studio.ui import runs

    checks = verify_run(tiny_run)
    assert [c.id for c in runs.verified(tiny_run)] == [c.id for c in checks]
    for lang in ("en", "zh-CN"):
        assert all(runs.VERIFY_LINES[c.id] in catalogue(lang) for c in checks)
    markdown = runs.checklist_markdown(checks, "zh-CN")
    assert markdown.count("✅") == 5 and "❌" not in markdown and "两个文件对模型的改变完全相同" in markdown

    broken = _copy(tiny_run, tmp_path)
    _edit(broken / "subject-comfyui.safetensors",
          lambda t: t.__setitem__("lora_unet_single_blocks_0_linear2.alpha", t["lora_unet_single_blocks_0_linear2.alpha"] * 3))
    (broken / "verify.json").unlink()  # verified() must run the check itself, in a child process
    job = {"id": 1, "run_dir": str(broken), "status": "succeeded", "config": {}}
    shown = runs.verified(broken)
    assert [c.ok for c in shown] == [True, True, True, True, False]
    assert "3x the diffusers file's" in runs.checklist_markdown(shown, "en")
    files = runs.result_files(job)
    assert any(f.endswith("subject-comfyui.safetensors") for f in files)
    assert runs.downloadable(files, shown) == [str(broken / "config.yaml")]
    assert runs.downloadable(files, checks) == files
