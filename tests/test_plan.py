"""The plan: what fits, how long, what it costs — from the dataset and the hardware, with sources;
and each run's prediction checked against what happened (plan.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio.families import get_family
from studio.plan import find_gpu, make_plan, plan_text

ROOT = Path(__file__).resolve().parents[1]
FULL_SIZE = [("flux1", "dev"), ("flux2-klein", "base-4b"), ("flux2-klein", "base-9b"), ("flux2-dev", "dev")]


def _photos(folder: Path, n: int, size=(1200, 1100), controls: bool = False) -> Path:
    """n random photos; with `controls`, each with a 'before' image of the same name in control/."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1] // 20, size[0] // 20, 3), dtype=np.uint8)).resize(
            size, Image.NEAREST).save(folder / f"p{i}.png")
    if controls:
        (folder / "control").mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size[1] // 20, size[0] // 20, 3), dtype=np.uint8)).resize(
                size, Image.NEAREST).save(folder / "control" / f"p{i}.png")
    return folder


@pytest.mark.parametrize("family_name,variant", FULL_SIZE)
def test_each_familys_plan_facts_are_its_architectures(family_name, variant):
    """Recounted from the full-size transformer on the meta device: parameters, attention width and
    blocks (FLOPs), the LoRA width of every target set, the bf16 weights, the image tokens per pixel."""
    family = get_family(family_name)
    facts = family.plan_facts(variant)
    config = family.full_config(variant)
    model = family.meta_transformer(config)
    parameters = sum(p.numel() for p in model.parameters())
    assert facts.parameters == pytest.approx(parameters, abs=0.006e9)
    assert facts.weight_gib["bf16"] == pytest.approx(parameters * 2 / 2**30, abs=0.05)
    assert facts.blocks == len(model.transformer_blocks) + len(model.single_transformer_blocks)
    assert facts.attention_width == model.transformer_blocks[0].attn.to_q.out_features
    assert facts.text_width == model.config.joint_attention_dim
    for name, suffixes in family.target_sets.items():
        width = sum(m.in_features + m.out_features for n, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and n.split(".")[0] in ("transformer_blocks",
                                                                               "single_transformer_blocks")
                    and any(".".join(n.split(".")[2:]) == s or n.endswith("." + s) for s in suffixes))
        assert facts.lora_width[name] == width, name
    # 8x VAE, then 2x2 patches: the transformer's input channels are the latent channels four times over,
    # and the family counts one token per 16x16 pixels of a 512 px image's latents.
    assert facts.latent_channels * 4 == config["in_channels"] * config.get("patch_size", 1) ** 2
    latents = torch.zeros(1, facts.latent_channels, 64, 64)
    if facts.latent_channels == 32:  # FLUX.2 patchifies before the transformer
        latents = torch.zeros(1, 128, 32, 32)
    assert family.image_seq_len(latents) == facts.image_tokens(512) == 1024
    assert set(facts.tier_memory) >= {tier for tier, _ in facts.offered_tiers()}


def test_what_fits_depends_on_the_card(tmp_path):
    data = _photos(tmp_path / "photos", 14)
    big, mid, small = (make_plan(data, gpu, family="flux1") for gpu in ("NVIDIA H100 80GB HBM3",
                                                                        "NVIDIA GeForce RTX 4090",
                                                                        "NVIDIA GeForce RTX 3060"))
    assert big.images == 14 and big.median_short_side == 1100 and big.resolution == 1024 and big.steps == 1400
    assert (big.tier, mid.tier, small.tier) == ("24gb", "16gb", "8gb")
    assert (big.family, big.variant, big.model) == ("flux1", "dev", "FLUX.1 [dev]")
    assert [r.fits for r in mid.rows] == [False, True, True, True]
    assert [r.fits for r in small.rows] == [False, False, False, True]  # NF4 at 1024 px needs ~11.6 of 12 GB
    assert all("estimated" in r.time_source and "published" in r.memory_source for r in mid.rows)
    # On 12 GB, T5 and CLIP (9.1 GiB) do not fit beside the 8gb tier's NF4 weights: captions are encoded
    # on the CPU, and the GPU's peak is the steps'. On an H100 they run on the GPU, and its peak is theirs.
    row = small.chosen()
    assert row.captions_on_cpu and not row.caching_peak and row.caption_minutes > 0 and "CPU" in row.caption_source
    assert big.rows[3].caching_peak and "text encoders" in big.rows[3].memory_source and not big.rows[3].captions_on_cpu
    # The same step on a slower card takes longer, in proportion to the published throughput.
    ratio = mid.chosen().seconds_per_step / big.rows[1].seconds_per_step
    assert ratio == pytest.approx(989 / 165, rel=0.01)
    assert make_plan(data, "NVIDIA GeForce RTX 4090", resolution=512).rows[0].seconds_per_step < \
        mid.rows[0].seconds_per_step
    text = plan_text(mid)
    assert "tier 16gb" in text and "base model download" in text and "estimated" in text


def test_the_proposal_is_the_largest_model_that_fits_and_the_table_lists_every_model(tmp_path):
    data = _photos(tmp_path / "photos", 4, size=(600, 600))  # 512 px
    mid, small, big = (make_plan(data, gpu) for gpu in ("RTX 4090", "RTX 3060", "H100"))
    assert (mid.family, mid.variant, mid.tier) == ("flux1", "dev", "16gb")
    assert (big.family, big.variant) == ("flux2-dev", "dev")  # the 32 B model fits an 80 GB card
    assert "estimated" in big.chosen().memory_source and big.chosen().memory_kind == "estimated"
    rows = {(m.family, m.variant): m for m in small.models}
    assert len(rows) == sum(len(get_family(f).variants) for f in {m.family for m in small.models}) >= 8
    # A 12 GB card: FLUX.1 in NF4 and the 4 B FLUX.2 [klein] fit; FLUX.2 [dev] needs a 48 GB class card.
    assert rows["flux1", "dev"].tier == "12gb" and rows["flux2-klein", "base-4b"].tier is not None
    assert rows["flux2-dev", "dev"].tier is None and rows["flux2-dev", "dev"].needs_gib >= 46
    assert rows["flux1-kontext", "dev"].note == "needs pairs" and not rows["flux1-kontext", "dev"].suits
    text = plan_text(small)
    assert "What fits on RTX 3060" in text and "needs >= " in text and "flux2-klein-base-4b" in text
    # A step-distilled variant with a base model beside it is not proposed; an explicit variant is.
    assert make_plan(data, "RTX 4090", family="flux2-klein").variant == "base-9b"
    assert make_plan(data, "RTX 4090", family="flux2-klein", variant="4b").variant == "4b"


def test_an_explicit_family_is_honoured_even_where_it_does_not_fit(tmp_path):
    data = _photos(tmp_path / "photos", 3, size=(800, 800))
    klein = make_plan(data, "RTX 4090", family="flux2-klein-base-4b")
    assert (klein.family, klein.variant, klein.model) == ("flux2-klein", "base-4b", "FLUX.2 [klein] Base 4B")
    assert klein.disk_mib["base model download"] < make_plan(data, "RTX 4090").disk_mib["base model download"]
    schnell = make_plan(data, "RTX 4090", variant="schnell")  # a bare variant: FLUX.1's
    assert (schnell.family, schnell.variant) == ("flux1", "schnell")
    dev2 = make_plan(data, "RTX 4090", family="flux2-dev")
    assert dev2.family == "flux2-dev" and dev2.tier is None and "Nothing fits in 24.0 GB" in dev2.notes[0]
    with pytest.raises(ValueError, match="no model family or variant 'flux9'"):
        make_plan(data, "RTX 4090", family="flux9")
    with pytest.raises(ValueError, match="has no variant 'turbo'"):
        make_plan(data, "RTX 4090", family="flux2-klein", variant="turbo")


def test_an_edit_dataset_proposes_an_edit_family_and_costs_more(tmp_path):
    pairs = _photos(tmp_path / "pairs", 5, size=(800, 800), controls=True)
    plain = _photos(tmp_path / "plain", 5, size=(800, 800))
    edit = make_plan(pairs, "RTX 4090")
    assert (edit.family, edit.pairs, edit.edit, edit.images) == ("flux1-kontext", 5, True, 5)
    assert get_family(edit.family).trains_from_pairs()
    assert any("5 before/after pair(s)" in n for n in edit.notes) and "5 before/after pair(s)" in plan_text(edit)
    # The same model on the same images without pairs: the reference tokens cost time, memory and cache.
    alone = make_plan(plain, "RTX 4090", family="flux1-kontext")
    assert alone.pairs == 0 and not alone.edit and any("has none" in n for n in alone.notes)
    assert edit.chosen().seconds_per_step > 1.5 * alone.chosen().seconds_per_step
    assert edit.chosen().peak_gib > alone.chosen().peak_gib
    assert edit.disk_mib["caches"] > alone.disk_mib["caches"]
    # A text-to-image model on an edit dataset trains on the targets only, at the text-to-image cost.
    t2i = make_plan(pairs, "RTX 4090", family="flux1")
    assert not t2i.edit and t2i.chosen().seconds_per_step == make_plan(plain, "RTX 4090").chosen().seconds_per_step
    assert any("only the" in n for n in t2i.notes)
    notes = {(m.family, m.variant): m.note for m in edit.models}
    assert notes["flux1", "dev"] == "targets only" and notes["flux1-kontext", "dev"] == ""


def test_no_gpu_plans_the_demo_model_from_measured_figures(tmp_path):
    plan = make_plan(_photos(tmp_path / "photos", 5, size=(400, 300)), None)
    from studio.demo import TRAIN_STEPS, studio_run

    # What the Train tab proposes on the demo model (studio_run), timed from bench/demo_run.py's figures.
    assert (plan.model, plan.tier, plan.resolution, plan.steps) == ("demo", "cpu", 128, TRAIN_STEPS)
    from studio.plan import DEMO_LORA_WIDTH

    rank = studio_run()["lora"]["rank"]  # the disk figures are those of the proposed LoRA
    assert plan.disk_mib["lora files"] == round(rank * DEMO_LORA_WIDTH * 4 / 2**20 * 2.5, 1)
    assert plan.rows[0].time_source.startswith("measured") and plan.rows[0].minutes < 5
    # What each real model would need: a GPU of at least its smallest tier, none fits without one. Its
    # text encoders need not fit (captions are then encoded on the CPU); its steps and loaded weights do.
    assert len(plan.models) >= 8 and all(m.tier is None for m in plan.models)
    needs = {(m.family, m.variant): m.needs_gib for m in plan.models}
    assert needs["flux1", "dev"] == round(7.5 / 0.95, 1)  # the 8gb tier's published peak
    klein = get_family("flux2-klein").plan_facts("base-4b")
    assert needs["flux2-klein", "base-4b"] >= klein.weight_gib["nf4"] + 1.0  # its NF4 weights and the CUDA context
    assert "What each real model needs:" in plan_text(plan) and "needs >= " in plan_text(plan)


def test_captions_are_encoded_on_the_cpu_where_the_text_encoders_do_not_fit(tmp_path):
    """The engine's rule (studio/core/text_encoders.py): the encoders' caching peak counts only where
    they fit beside the tier's loaded weights; elsewhere the plan estimates their time on the CPU."""
    from studio.core.text_encoders import CPU_TFLOPS
    from studio.ui.plan_view import plan_markdown

    data = _photos(tmp_path / "photos", 9, size=(600, 600))  # 512 px
    flux1 = get_family("flux1").plan_facts("dev")
    # A 10 GB card trains FLUX.1 in the 8gb tier; T5 and CLIP are encoded on the CPU, an estimated time.
    ten = make_plan(data, "RTX 3080", family="flux1")
    row = ten.chosen()
    assert ten.tier == "8gb" and row.fits and row.captions_on_cpu and not row.caching_peak
    assert row.peak_gib == flux1.tier_memory["8gb"].peak_gib  # the steps' peak, not the encoders'
    assert row.caption_minutes == round(flux1.cpu_caption_seconds(10) / 60, 1) > 1
    assert flux1.cpu_caption_seconds(1) == pytest.approx(2 * 9.1 * 2**30 / 2 * 512 / (CPU_TFLOPS * 1e12))
    assert "the 10 caption(s) are encoded on the CPU" in row.caption_source and "assumed" in row.caption_source
    assert "captions: the text encoders" in plan_text(ten)
    assert "captions are encoded on the CPU" in plan_markdown(data, ("RTX 3080", 10.0), "en", "flux1")
    assert "CPU 上编码" in plan_markdown(data, ("RTX 3080", 10.0), "zh-CN", "flux1")
    # 24 GB: they fit beside the 16gb tier's int8 weights, margin included, and make its peak; 23 GB: not.
    fits = make_plan(data, "RTX 4090", 24.0, family="flux1").chosen()
    tight = make_plan(data, "RTX 4090", 23.0, family="flux1").chosen()
    assert fits.tier == tight.tier == "16gb"
    assert not fits.captions_on_cpu and fits.caching_peak and fits.peak_gib == round(1.0 + 11.1 + 9.1, 1)
    assert tight.captions_on_cpu and not tight.caching_peak and tight.peak_gib == 18.0
    # FLUX.2 [klein] 9B: every tier needs the card its tier table names (Qwen3-8B, 15.3 GiB, on the
    # CPU where it does not fit), so a 10 GB card trains it in the 12gb tier.
    klein = make_plan(data, "RTX 3080", family="flux2-klein", variant="base-9b")
    assert klein.tier == "12gb" and klein.chosen().captions_on_cpu
    assert {r.tier: r.needs_gib for r in klein.rows if r.tier != "8gb"} == \
        dict(get_family("flux2-klein").variant_tiers("base-9b"))
    # FLUX.2 [dev] on a 48 GB card: its int8 tier trains; Mistral (44.7 GiB) is encoded on the CPU.
    dev2 = make_plan(data, "A6000", family="flux2-dev")
    assert dev2.tier == "16gb" and dev2.chosen().captions_on_cpu and dev2.chosen().caption_minutes > 10


def test_unknown_gpu_names_and_flops():
    assert find_gpu("NVIDIA GeForce RTX 4090")[0] == "RTX 4090" and find_gpu("H100 PCIe")[0] == "H100 PCIe"
    assert find_gpu("Some Future Card") is None
    facts = get_family("flux1").plan_facts("dev")
    assert facts.step_flops(1024) > 3 * facts.step_flops(512)
    assert facts.step_flops(512, checkpointing=False) < facts.step_flops(512)
    assert 1.5 * facts.step_flops(512) < facts.step_flops(512, pairs=True) < facts.step_flops(1024)  # text: once
    klein = get_family("flux2-klein").plan_facts("base-4b")
    assert klein.step_flops(512) < facts.step_flops(512) / 2  # a third of the parameters


def test_cli_plan(tmp_path):
    data = _photos(tmp_path / "photos", 3, size=(800, 800))
    out = subprocess.run([sys.executable, "-m", "studio", "plan", str(data), "--gpu", "RTX 4090", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["resolution"] == 768 and plan["tier"] == "16gb" and len(plan["rows"]) == 4
    assert (plan["family"], plan["variant"]) == ("flux1", "dev") and len(plan["models"]) >= 8


def test_a_run_records_its_prediction_and_what_happened(tmp_path):
    from studio.models import build_demo_model

    model = build_demo_model(tmp_path / "model", size="tiny")
    data = _photos(tmp_path / "data", 2, size=(256, 256))
    for p in data.iterdir():
        p.with_suffix(".txt").write_text("a photo of sks", encoding="utf-8")
    run = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {{base: {model}}}\ndataset: {{path: {data}, resolution: 64}}\n"
                      "schedule: {max_steps: 4}\nsample: {every: 0, at_start: false}\nsave: {every: 0}\n",
                      encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "studio", "train", str(config), "--tier", "cpu", "--run-dir", str(run)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    plan = json.loads((run / "plan.json").read_text())
    assert plan["predicted"]["tier"] == "cpu" and plan["predicted"]["time_source"].startswith("measured")
    assert plan["actual"]["seconds_per_step"] > 0 and plan["actual"]["peak_gib"] > 0.1
    assert set(plan["error_percent"]) == {"seconds_per_step", "peak_gib"}
    assert "Plan vs this run" in (run / "train.log").read_text()


def test_the_train_tab_plan_speaks_the_page_language(tmp_path):
    from studio.ui.plan_view import plan_markdown

    data = _photos(tmp_path / "photos", 4, size=(900, 800))
    en = plan_markdown(data, ("NVIDIA GeForce RTX 4090", 24.0), "en")
    assert "What fits: RTX 4090" in en and "tier 16gb" in en and "| 24gb | no | 28.7 |" in en
    assert "estimated from the model's FLOPs" in en and "Every model on RTX 4090" in en
    assert "| FLUX.2 [dev] | needs ≥ " in en and "| FLUX.2 [klein] Base 4B | fits, tier 24gb |" in en
    klein = plan_markdown(data, ("NVIDIA GeForce RTX 4090", 24.0), "zh-CN", "flux2-klein", "base-4b")
    assert "建议：FLUX.2 [klein] Base 4B" in klein and "估算" in klein and "需要编辑前/后图片对" in klein
    zh = plan_markdown(data, None, "zh-CN")
    assert "没有显卡" in zh and "在 2 核 CPU 上实测" in zh and "| cpu | 是 |" in zh
    assert "每个模型需要的显卡" in zh and "| FLUX.2 [dev] | 需要 ≥ " in zh
    assert plan_markdown(None, None, "en") == "" and plan_markdown(tmp_path / "missing", None, "en") == ""


def test_cli_plan_refuses_what_it_cannot_plan(tmp_path):
    def plan(*args):
        return subprocess.run([sys.executable, "-m", "studio", "plan", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)

    missing = plan(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "is not a folder" in missing.stderr and not missing.stdout
    (tmp_path / "empty").mkdir()
    empty = plan(str(tmp_path / "empty"), "--gpu", "RTX 4090")
    assert empty.returncode == 2 and "No readable photos" in empty.stderr
    data = _photos(tmp_path / "photos", 2, size=(600, 600))
    unknown = plan(str(data), "--gpu", "Some Future Card")
    assert unknown.returncode == 2 and "--gpu-gb" in unknown.stderr and "RTX 4090" in unknown.stderr
    known_memory = plan(str(data), "--gpu", "Some Future Card", "--gpu-gb", "48", "--family", "flux1")
    assert known_memory.returncode == 0 and "tier 24gb" in known_memory.stdout
    family = plan(str(data), "--gpu", "RTX 4090", "--family", "flux9")
    assert family.returncode == 2 and "flux2-klein" in family.stderr and "flux9" in family.stderr


def test_a_run_of_another_family_predicts_with_that_familys_facts(tmp_path, monkeypatch):
    """record_prediction plans the family the config names (here on a pretend RTX 4090), and
    record_actual keeps what happened beside it with the error in percent."""
    from studio import plan_record
    from studio.config import resolve

    data = _photos(tmp_path / "photos", 3, size=(800, 800))
    cfg = resolve({"model": {"base": "black-forest-labs/FLUX.2-klein-base-4B", "family": "flux2-klein-base-4b"},
                   "dataset": {"path": str(data), "resolution": 768}, "schedule": {"max_steps": 500}},
                  preset="portrait", tier="16gb")
    assert plan_record.run_model(cfg) == ("flux2-klein", "base-4b")
    monkeypatch.setattr(plan_record, "_visible_gpu", lambda: ("NVIDIA GeForce RTX 4090", 23.6))
    run = tmp_path / "run"
    run.mkdir()
    predicted = plan_record.record_prediction(run, cfg)
    klein = make_plan(data, "RTX 4090", 23.6, family="flux2-klein", variant="base-4b", steps=500)
    row = next(r for r in klein.rows if r.tier == "16gb")
    assert predicted["model"] == "FLUX.2 [klein] Base 4B" and predicted["tier"] == "16gb"
    assert (predicted["seconds_per_step"], predicted["peak_gib"]) == (row.seconds_per_step, row.peak_gib)
    outcome = plan_record.record_actual(run, predicted["seconds_per_step"] * 2, predicted["peak_gib"])
    assert outcome["error_percent"] == {"seconds_per_step": -50.0, "peak_gib": 0.0}
    assert json.loads((run / "plan.json").read_text())["actual"]["seconds_per_step"] > 0


def test_the_plan_imports_neither_torch_nor_diffusers(tmp_path):
    """The Train tab draws the plan on every page load and dataset pick, in the UI process: every
    family's facts (FLUX.3's full-size shape included) come without loading the model libraries."""
    data = _photos(tmp_path / "photos", 2)
    code = ("import sys; from studio.plan import make_plan, plan_text; "
            f"plan = make_plan({str(data)!r}, 'RTX 4090'); assert 'flux3' in plan_text(plan); "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_a_named_model_is_checked_and_told_what_it_needs_without_a_gpu(tmp_path):
    data = _photos(tmp_path / "photos", 3)
    with pytest.raises(ValueError, match="has no variant 'turbo'"):
        make_plan(data, None, family="flux3", variant="turbo")
    plan = make_plan(data, None, family="flux2-klein", variant="base-4b")
    assert plan.model == "demo" and plan.tier == "cpu"  # the plan itself is the demo model's
    assert plan.notes[0].startswith("FLUX.2 [klein] Base 4B needs an NVIDIA GPU of about")


def test_captions_encoded_on_the_cpu_count_the_computers_memory(tmp_path, monkeypatch):
    """Text encoders that go to the CPU need the computer's RAM: the row says how much (the same
    rule as the GPU's room: weights plus margin), and a computer with less is told so, in the
    plan's notes and in the page, in each language."""
    import studio.plan as plan_module
    from studio.core.text_encoders import GIB, needed_bytes
    from studio.ui.plan_view import plan_markdown

    data = _photos(tmp_path / "photos", 4, size=(600, 600))
    mistral = get_family("flux2-dev").plan_facts("dev").text_encoder_gib
    monkeypatch.setattr(plan_module, "host_memory_gib", lambda: 32.0)
    small = make_plan(data, "A6000", family="flux2-dev")
    row = small.chosen()
    assert row.captions_on_cpu and row.caption_ram_gib == round(needed_bytes(mistral * GIB) / GIB, 1) > 32
    assert f"about {row.caption_ram_gib:g} GB of the computer's memory (RAM)" in row.caption_source
    assert any("this computer has 32 GB" in n for n in small.notes), small.notes
    assert "This computer has 32 GB of memory (RAM)" in plan_markdown(data, ("A6000", 48.0), "en", "flux2-dev")
    assert "这台电脑只有 32 GB 内存" in plan_markdown(data, ("A6000", 48.0), "zh-CN", "flux2-dev")
    monkeypatch.setattr(plan_module, "host_memory_gib", lambda: 128.0)
    assert not any("RAM" in n for n in make_plan(data, "A6000", family="flux2-dev").notes)
    assert "memory (RAM);" not in plan_markdown(data, ("A6000", 48.0), "en", "flux2-dev")


def test_a_containers_memory_limit_counts_as_the_computers_memory(tmp_path):
    """In Docker, a hosted Space or a limited service the studio may use the lowest memory limit on
    the way from its own cgroup up to the root, not the machine's RAM: cgroup v2 `memory.max` and v1
    `memory.limit_in_bytes` are read; "max" and v1's huge number mean no limit."""
    from studio.core.host_memory import host_memory_gib

    proc = tmp_path / "proc-cgroup"
    proc.write_text("")
    physical = host_memory_gib(tmp_path / "none", proc)  # no cgroup files: the machine's RAM
    assert physical is not None and physical > 0.5

    def limit(path, text):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")

    v2 = tmp_path / "v2"
    limit(v2 / "memory.max", str(2 * 2**30))  # a container's own root (cgroup namespace)
    assert host_memory_gib(v2, proc) == min(2.0, physical)
    limit(v2 / "memory.max", "max")
    assert host_memory_gib(v2, proc) == physical
    proc.write_text("0::/system.slice/studio.service\n")  # no namespace: the service's own folder counts,
    limit(v2 / "system.slice" / "memory.max", str(2**30))  # and a parent's lower limit too
    limit(v2 / "system.slice" / "studio.service" / "memory.max", "max")
    assert host_memory_gib(v2, proc) == min(1.0, physical)

    v1 = tmp_path / "v1"
    proc.write_text("9:pids:/x\n4:memory:/docker/abc\n")
    limit(v1 / "memory" / "docker" / "abc" / "memory.limit_in_bytes", "536870912")
    limit(v1 / "memory" / "memory.limit_in_bytes", "9223372036854771712")
    assert host_memory_gib(v1, proc) == min(0.5, physical)
    limit(v1 / "memory" / "docker" / "abc" / "memory.limit_in_bytes", "9223372036854771712")
    assert host_memory_gib(v1, proc) == physical


def test_the_demo_plans_lora_width_is_the_committed_models():
    """The demo row's LoRA and checkpoint sizes count the committed demo transformer's attention layers."""
    from diffusers import FluxTransformer2DModel

    from studio.demo import MODEL_DIR
    from studio.families.flux1 import TARGET_SETS
    from studio.plan import DEMO_LORA_WIDTH

    model = FluxTransformer2DModel.from_pretrained(str(MODEL_DIR), subfolder="transformer")
    width = sum(m.in_features + m.out_features for name, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and any(name.endswith(t) for t in TARGET_SETS["attention"]))
    assert width == DEMO_LORA_WIDTH
