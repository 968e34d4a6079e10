"""FLUX.3 end to end on its tiny offline model: detection, the training step against the FLUX.3
objective computed with diffusers' own FLUX.3 helpers, learning, the diffusers LoRA file loaded
by the modular pipeline, resume and a worker job."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import Events, tiny_config
from engine_checks import (CAPTIONS, QUANTISED_CASES, QUANTISED_IDS, assert_lora_changes_output,
                           assert_resume_is_bitwise_exact, assert_step_matches, memorising_config, memorising_run,
                           one_step, pixels, quantised_run, replay, resume_settings, run, single_file_pipeline, squares,
                           worker_job)
from studio.config import resolve
from studio.events import EXIT_OK
from studio.families.base import get_family, inspect_model

pytestmark = pytest.mark.engine
FLUX3 = get_family("flux3")
SHIFT = 6.93  # Flux3SetTimestepsStep's default


def pipeline(model, distilled: bool = False):
    """The diffusers way: the auto blocks without the prompt upsampler, components from the folder."""
    import diffusers

    blocks = getattr(diffusers, "Flux3DistilledAutoBlocks" if distilled else "Flux3AutoBlocks")()
    blocks.sub_blocks.pop("prompt_upsampler")
    pipe = blocks.init_pipeline(str(model))
    pipe.load_components(dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encode(pipe, caption: str):
    """Prompt embeddings and text ids with diffusers' helpers, padded to the studio's 512 tokens."""
    from diffusers.modular_pipelines.flux3.before_denoise import Flux3TextRoPEInputsStep
    from diffusers.modular_pipelines.flux3.encoders import Flux3TextEncoderStep

    embeds = Flux3TextEncoderStep._get_qwen3_vl_prompt_embeds(pipe.text_encoder, pipe.tokenizer, caption,
                                                              max_sequence_length=512, pad_multiple=512)
    return embeds, Flux3TextRoPEInputsStep._prepare_text_ids(embeds)


def latents(pipe, path: Path):
    """What Flux3VaeEncoderStep does to an image: the mode, 2x2 patches, the VAE's batch norm."""
    from diffusers.modular_pipelines.flux3.encoders import Flux3VaeEncoderStep

    vae = pipe.vae
    x = Flux3VaeEncoderStep._patchify_latents(vae.encode(pixels(path)).latent_dist.mode())
    mean = vae.bn.running_mean.view(1, -1, 1, 1)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
    return (x - mean) / std


def predict(transformer, noisy, t, embeds, text_ids):
    """The velocity as Flux3LoopDenoiser asks for it (tokens row by row, 4-D ids at rope scale 0.5)."""
    from diffusers.modular_pipelines.flux3.before_denoise import _prepare_image_ids

    h, w = noisy.shape[-2:]
    return transformer(hidden_states=noisy.flatten(2).transpose(1, 2), timestep=t, encoder_hidden_states=embeds,
                       img_ids=_prepare_image_ids(h, w, 0.5), txt_ids=text_ids, return_dict=False)[0]


@pytest.fixture(scope="module")
def flux3(tmp_path_factory) -> Path:
    return FLUX3.build_tiny(tmp_path_factory.mktemp("flux3") / "tiny")


# --------------------------------------------------------------------------- the model


def test_detected_from_configs_and_key_names(flux3, tmp_path):
    info = inspect_model(str(flux3))
    assert (info.family_name, info.variant, info.token_limit, info.guidance_embeds) == ("flux3", "base", 512, False)
    distilled = tmp_path / "distilled"  # config files are all detection reads
    for name in ("transformer/config.json", "vae/config.json"):
        (distilled / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(flux3 / name, distilled / name)
    config = json.loads((distilled / "transformer/config.json").read_text())
    (distilled / "transformer/config.json").write_text(json.dumps({**config, "flow_map": True}))
    assert inspect_model(str(distilled)).variant == "distilled"
    for other in ("flux1", "flux2-klein", "flux2-dev"):
        assert get_family(other).detect({}, config) is None
    from safetensors import safe_open
    keys = list(safe_open(str(flux3 / "transformer" / "diffusion_pytorch_model.safetensors"), "pt").keys())
    bfl = ["early_stream_modulations.image.lin.weight", "single_blocks.0.q_proj.weight"]  # diffusers' converter's names
    assert FLUX3.detect_keys(keys) and not get_family("flux2-klein").detect_keys(keys)
    assert FLUX3.detect_keys(bfl) and FLUX3.detect_keys(["model.diffusion_model." + k for k in bfl])
    assert not FLUX3.detect_keys(["single_stream_modulation.lin.weight", "double_blocks.0.img_attn.qkv.weight"])
    assert not get_family("flux2-klein").detect_keys(bfl)


def test_single_file_transformer_replaces_the_folders(flux3, tmp_path):
    from diffusers import Flux3Transformer2DModel

    pipe, other = single_file_pipeline(FLUX3, flux3, tmp_path, Flux3Transformer2DModel)
    assert torch.equal(pipe.transformer.context_embedder.weight, other.context_embedder.weight)
    assert not pipe.transformer.context_embedder.weight.requires_grad and pipe.text_encoder is not None


def test_a_folder_without_its_text_encoder_is_a_clear_model_error(flux3, tmp_path):
    from studio.families.base import ModelError

    broken = tmp_path / "broken"
    shutil.copytree(flux3, broken, ignore=shutil.ignore_patterns("text_encoder"))
    with pytest.raises(ModelError, match="text_encoder did not load"):
        FLUX3.load(inspect_model(str(broken)))


def test_full_size_counts_and_facts():
    """Parameters counted on the meta device from the published (default) configs; licences not invented."""
    for variant, v in FLUX3.variants.items():
        model = FLUX3.meta_transformer(FLUX3.full_config(variant))
        count = sum(p.numel() for p in model.parameters()) / 1e9
        assert abs(count - v.parameters_b) < 0.005, (variant, count)
        assert v.licence_id == "other" and v.hub_id in v.licence_text and "model card" in v.licence_text
        assert FLUX3.variant_weight_gib(variant)["bf16"] == pytest.approx(count * 1e9 * 2 / 2 ** 30, rel=0.01)
    assert FLUX3.full_config("distilled")["flow_map"] and not FLUX3.full_config("base")["flow_map"]
    import inspect

    from diffusers import Flux3Transformer2DModel

    defaults = {name: p.default for name, p in inspect.signature(Flux3Transformer2DModel.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert FLUX3.full_config("base") == defaults  # the written-out shape is the class's own
    assert (FLUX3.full_config("base")["num_layers"], FLUX3.full_config("base")["num_single_layers"]) == (5, 28)
    assert FLUX3.resolution_shift(256) == FLUX3.resolution_shift(4096) == SHIFT
    assert FLUX3.block_of("txt_mode_blocks.2.attn.to_q.lora_A.default.weight") == "double.2"
    assert FLUX3.block_of("mode_blocks.image.1.ff.linear_in.lora_B.default.weight") == "double.1"
    assert FLUX3.block_of("single_transformer_blocks.7.attn.to_out.0.weight") == "single.7"


def test_plan_facts_are_the_architectures():
    """The plan's LoRA width per target set is recounted from the full-size transformer on the meta
    device with the family's own target selection; FLUX.3 trains text-to-image only."""
    from studio.config import TrainConfig

    for variant in FLUX3.variants:
        facts = FLUX3.plan_facts(variant)
        model = FLUX3.meta_transformer(FLUX3.full_config(variant))
        modules = dict(model.named_modules())
        for targets in FLUX3.target_sets:
            names = FLUX3.target_modules(TrainConfig.from_dict({"lora": {"targets": targets}}).lora, model)
            assert facts.lora_width[targets] == sum(modules[n].in_features + modules[n].out_features
                                                    for n in names), (variant, targets)
        assert facts.text_width == model.config.joint_attention_dim and facts.text_encoder_gib > 0
        assert not facts.trains_from_pairs and facts.latent_channels == 32


def test_targets_and_block_selection(flux3):
    model = FLUX3.meta_transformer(json.loads((flux3 / "transformer/config.json").read_text()))
    lora = type("L", (), {"targets": "all_linear", "target_modules": None, "double_blocks": [1], "single_blocks": [0]})
    names = FLUX3.target_modules(lora, model)
    assert names and not any("image_cond" in n for n in names)  # text-to-image: reference blocks see nothing
    assert {n.rsplit(".", 2)[0] if n.endswith("to_out.0") else n.rsplit(".", 1)[0] for n in names} == {
        "txt_mode_blocks.1.attn", "txt_mode_blocks.1.ff", "mode_blocks.image.1.attn", "mode_blocks.image.1.ff",
        "single_transformer_blocks.0.attn", "single_transformer_blocks.0.ff"}
    assert len(names) == 3 * 6


def test_full_size_file_passes_verify(tmp_path):
    """A full-size FLUX.3 LoRA (every linear target, real shapes, rank 2) written by the family: verify
    finds exactly the trained layers of the published architecture, with their shapes."""
    from peft import LoraConfig, get_peft_model_state_dict

    from studio.verify import verify_files

    config = FLUX3.full_config("base")
    model = FLUX3.meta_transformer(config)
    lora = type("L", (), {"targets": "all_linear", "target_modules": None, "double_blocks": None, "single_blocks": None})
    targets = FLUX3.target_modules(lora, model)
    assert len(targets) == (2 * 5 + 28) * 6  # text and image per-mode blocks, joint blocks; 6 layers each
    model.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=targets))
    gen = torch.Generator().manual_seed(0)
    layers = {k: torch.randn(v.shape, generator=gen) * 0.01 for k, v in get_peft_model_state_dict(model).items()}
    paths = FLUX3.write_lora(tmp_path, "full", layers, 2, 2, {"model_variant": "base"}, save_comfyui=True)
    assert list(paths) == ["diffusers"]
    checks = verify_files(paths["diffusers"], None, config, "full size", targets, FLUX3)
    assert [c.id for c in checks] == ["readable_diffusers", "diffusers_keys"]
    assert all(c.ok for c in checks), [c.line() for c in checks if not c.ok]
    shrunk = {**config, "num_single_layers": 27}  # a file for a bigger model than the one it is checked on
    assert not verify_files(paths["diffusers"], None, shrunk, "smaller", targets, FLUX3)[1].ok


# --------------------------------------------------------------------------- the step


@pytest.mark.parametrize("distilled", [False, True], ids=["base", "flow-map"])
def test_step_equals_the_flux3_objective(flux3, tmp_path, distilled):
    """Loss and LoRA gradients of one step equal the FLUX.3 objective computed with diffusers' FLUX.3
    helpers (Qwen3-VL encoding, VAE latents with batch norm, token packing, 4-D ids, the constant shift);
    a flow-map model gets the step's own t as its target timestep."""
    model = flux3
    if distilled:
        model = FLUX3.build_tiny(tmp_path / "distilled", variant="distilled")
    folder = squares(tmp_path / "one", count=1)
    cfg = resolve(tiny_config(model, folder, tmp_path / "out", lora={"rank": 4, "alpha": 8}), tier="cpu")
    assert cfg.training.timestep_sampling == "resolution_shift" and not cfg.save.comfyui  # the family's settings
    trainer, loss, grads, state = one_step(cfg, tmp_path / "run", tmp_path / "data")

    pipe = pipeline(model, distilled)
    gen = replay(state)
    with torch.no_grad():
        embeds, text_ids = encode(pipe, CAPTIONS[0])
        x0 = latents(pipe, folder / "pic_0.png")
    noise = torch.randn(x0.shape, generator=gen)
    sigma = torch.sigmoid(torch.randn((1,), generator=gen) * cfg.training.logit_std)
    t = SHIFT * sigma / (1 + (SHIFT - 1) * sigma)
    noisy = (1 - t) * x0 + t * noise
    from diffusers.modular_pipelines.flux3.before_denoise import _prepare_image_ids
    h, w = noisy.shape[-2:]
    pred = trainer.transformer(hidden_states=noisy.flatten(2).transpose(1, 2), timestep=t,
                               encoder_hidden_states=embeds, img_ids=_prepare_image_ids(h, w, 0.5), txt_ids=text_ids,
                               return_dict=False, **({"target_timestep": t} if distilled else {}))[0]
    assert_step_matches(trainer, loss, grads, ((pred - (noise - x0).flatten(2).transpose(1, 2)) ** 2).mean(),
                        rtol=1e-4, atol=1e-6, relative_loss=True)


# --------------------------------------------------------------------------- learning and files


@pytest.fixture(scope="module")
def trained(flux3, tmp_path_factory):
    """The memorising run (samples guided at 3.5) that the learning and file tests share."""
    root = tmp_path_factory.mktemp("flux3-trained")
    return memorising_run(run, memorising_config(flux3, squares(root / "ds"), root / "out", sample={"guidance": 3.5}),
                          root)


def test_lora_memorises_the_training_latents(trained, flux3):
    """At fixed noise and noise levels, the trained LoRA predicts the training images' velocity far
    better than the base model does (memorisation in latent space, not only a falling loss)."""
    run_dir, dataset, _ = trained
    pipe = pipeline(flux3)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        cases = []
        for i, caption in enumerate(CAPTIONS):
            embeds, text_ids = encode(pipe, caption)
            x0 = latents(pipe, dataset / f"pic_{i}.png")
            for t in (0.3, 0.6, 0.9):
                cases.append((embeds, text_ids, x0, torch.randn(x0.shape, generator=gen), torch.tensor([t])))

        def error():
            total = 0.0
            for embeds, text_ids, x0, noise, t in cases:
                pred = predict(pipe.transformer, (1 - t) * x0 + t * noise, t, embeds, text_ids)
                total += float(((pred - (noise - x0).flatten(2).transpose(1, 2)) ** 2).mean())
            return total / len(cases)

        base = error()
        pipe.load_lora_weights(str(run_dir / "test-lora.safetensors"), adapter_name="mine")
        learned = error()
    assert learned < 0.85 * base, (base, learned)


def test_diffusers_file_loads_changes_output_and_weight_zero_is_base(trained, flux3):
    """The modular pipeline (Flux3LoraLoaderMixin) loads the file: the image changes; at weight 0 it is
    the base model's image bit for bit. The run wrote no ComfyUI file (the family's setting)."""
    run_dir, _, events = trained
    pipe = pipeline(flux3)

    def generate():
        return pipe(prompt=CAPTIONS[0], num_inference_steps=2, height=64, width=64,
                    generator=torch.Generator().manual_seed(7), output="images", output_type="np")[0]

    assert_lora_changes_output(pipe, run_dir / "test-lora.safetensors", generate)
    assert events.of("done")[-1]["files"] == [str(run_dir / "test-lora.safetensors")]
    assert not (run_dir / "test-lora-comfyui.safetensors").exists()


def test_file_metadata_and_validation(trained):
    from studio.lora_files import read_metadata

    run_dir, _, events = trained
    path = run_dir / "test-lora.safetensors"
    meta = read_metadata(path)
    assert (meta["model_family"], meta["model_variant"], meta["modelspec.license"]) == ("flux3", "base", "other")
    assert "ss_network_module" not in meta and "flux-3-image-klein" in meta["modelspec.implementation"]
    assert meta["ss_network_dim"] == "8" and FLUX3.validate(path).rank == 8
    deltas = FLUX3.delta_weights(path)
    assert any(k.startswith("txt_mode_blocks.") for k in deltas) and any(k.endswith("ff.linear_out") for k in deltas)
    assert "model card" in events.of("start")[0]["licence"]
    sample = events.of("sample")[-1]  # guided against the empty prompt cached before the encoder went
    assert sample["step"] == 50
    from studio.verify import verify_run
    checks = verify_run(run_dir)  # the diffusers file's checks: no ComfyUI file is expected
    assert [c.id for c in checks] == ["readable_diffusers", "diffusers_keys"]
    assert all(c.ok for c in checks), [c.line() for c in checks if not c.ok]


def test_comfyui_file_is_refused_before_training(flux3, tmp_path):
    cfg = tiny_config(flux3, squares(tmp_path / "ds", count=1), tmp_path / "out", save={"comfyui": True})
    code, events = run(cfg, tmp_path / "run", tmp_path / "data")
    error = events.of("error")[0]
    assert code != EXIT_OK and error["code"] == "CONFIG_INVALID" and "save.comfyui" in error["message"]
    assert not (tmp_path / "run" / "test-lora.safetensors").exists()


# --------------------------------------------------------------------------- resume and the worker


def test_resume_is_bitwise_exact(flux3, tmp_path):
    cfg = tiny_config(flux3, squares(tmp_path / "ds", count=2), tmp_path / "out", **resume_settings(6))
    assert_resume_is_bitwise_exact(partial(run, data_dir=tmp_path / "data"), cfg, tmp_path, at=3)


def test_worker_runs_a_flux3_job(flux3, tmp_path):
    config = resolve(tiny_config(flux3, squares(tmp_path / "ds"), tmp_path / "out", schedule={"max_steps": 3},
                                 save={"every": 2, "run_name": "flux3"}), tier="cpu")
    store, job_id, job = worker_job(tmp_path / "data", "flux3", config)
    assert job["exit_code"] == 0 and job["step"] == 3 and [Path(f).name for f in job["files"]] == ["flux3.safetensors"]
    start = store.events(job_id, types=["start"])[0]
    assert start["family"] == "base" and "model card" in start["licence"]


def test_tryit_draws_without_and_with_the_lora(flux3, trained, tmp_path):
    """The Results tab's try-it (studio/jobs/tryit.py) on FLUX.3: the modular pipeline encodes the prompt,
    guides against the empty prompt, and the run's LoRA changes the picture."""
    from PIL import Image

    from studio.jobs.tryit import run as tryit

    request = {"base": str(flux3), "prompt": CAPTIONS[0], "steps": 2, "width": 64, "height": 64, "seed": 1,
               "guidance": 3.5, "lora": str(trained[0] / "test-lora.safetensors"), "strength": 1.0}
    events = Events()
    tryit(request, tmp_path, events)
    without, with_lora = (np.asarray(Image.open(tmp_path / f"{n}.png"), dtype=float) for n in ("without", "with"))
    assert without.shape == with_lora.shape == (64, 64, 3) and np.abs(without - with_lora).mean() > 0.5
    assert [e["path"] for e in events.of("sample")] == ["without.png", "with.png"]


def test_model_card_code_runs_and_says_there_is_no_comfyui_file(trained, flux3):
    """The published card's diffusers code (the modular pipeline) runs as written, pointed at local
    copies of the base and the LoRA; the card says why there is no ComfyUI file; the licence links to
    the model card, not to a licence file the studio cannot know exists."""
    from studio.model_card import model_card

    run_dir = trained[0]
    card = model_card(run_dir, repo_id="someone/flux3-lora")
    hub = FLUX3.variants["base"].hub_id
    assert "There is no ComfyUI file" in card and "comfyui.safetensors" not in card
    assert f"license_link: https://huggingface.co/{hub}\n" in card
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    assert "Flux3AutoBlocks" in code and 'pop("prompt_upsampler")' in code
    local = (code.replace(f'"{hub}"', f'"{flux3}"').replace('"someone/flux3-lora"', f'"{run_dir}"')
             .replace("torch.bfloat16", "torch.float32").replace('pipe.to("cuda")', "")
             .replace("num_inference_steps=50", "num_inference_steps=2, height=64, width=64")
             .replace('image.save("out.png")', ""))
    scope: dict = {}
    exec(compile(local, "model card", "exec"), scope)  # noqa: S102  (the card's own code, offline)
    assert scope["image"].size == (64, 64)
    assert scope["pipe"].transformer.peft_config  # the LoRA is loaded


def test_publish_uploads_the_one_lora_file(trained, monkeypatch):
    from fake_hub import FakeHub
    from huggingface_hub import constants

    from studio.publish import publish_run

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the fake Hub on 127.0.0.1 only
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    run_dir = trained[0]
    with FakeHub() as hub:
        publish_run(run_dir, "alice/flux3-lora", token="hf_test_token", endpoint=hub.url)
    files = hub.files["alice/flux3-lora"]
    assert {"test-lora.safetensors", "config.yaml", "README.md"} <= set(files)
    assert not any("comfyui" in name for name in files)
    assert files["test-lora.safetensors"] == (run_dir / "test-lora.safetensors").read_bytes()


def test_report_card_and_promoting_a_checkpoint(flux3, tmp_path):
    """The report card draws FLUX.3 checkpoints at several strengths through the modular pipeline, and
    promoting step 2 rewrites the one LoRA file, which then passes verify."""
    from studio.report_card import build_report_card, promote
    from studio.verify import verify_run

    cfg = tiny_config(flux3, squares(tmp_path / "ds"), tmp_path / "out", schedule={"max_steps": 4},
                      optimizer={"lr": 1e-2}, save={"every": 2, "keep_last": 0})
    code, events = run(cfg, tmp_path / "run", tmp_path / "data")
    assert code == EXIT_OK, events.of("error")
    report = build_report_card(tmp_path / "run", strengths=(0.0, 1.0))
    assert [r["label"] for r in report["rows"]] == ["step 2", "final"] and report["grids"]
    final = (tmp_path / "run" / "test-lora.safetensors").read_bytes()
    files = promote(tmp_path / "run", 2)
    assert [Path(f).name for f in files] == ["test-lora.safetensors"]
    assert (tmp_path / "run" / "test-lora.safetensors").read_bytes() != final
    assert all(c.ok for c in verify_run(tmp_path / "run"))


@pytest.mark.parametrize("tier, precision, avx512_bf16", QUANTISED_CASES, ids=QUANTISED_IDS)
def test_quantised_base_trains_and_saves(flux3, tmp_path, monkeypatch, cpu_quantisation, tier, precision, avx512_bf16):
    """The 12 and 16 GB tiers' quantised FLUX.3 bases through the engine on the CPU kernels
    (engine_checks.quantised_run)."""
    from peft.tuners.lora import bnb as peft_bnb

    state, files = quantised_run(flux3, squares(tmp_path / "ds"), tmp_path, monkeypatch, cpu_quantisation, tier,
                                 precision, avx512_bf16)
    layer = state.transformer.single_transformer_blocks[0].attn.to_q
    assert isinstance(layer, peft_bnb.Linear4bit if precision == "nf4" else peft_bnb.Linear8bitLt)
    assert [Path(f).name for f in files] == ["test-lora.safetensors"] and FLUX3.validate(files[0]).rank == 4


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_results_tab_card_names_no_comfyui_file(lang, tmp_path):
    from studio.i18n import t
    from studio.ui import runs

    job = {"name": "flux3-lora", "step": 20, "files": [str(tmp_path / "flux3-lora.safetensors")], "run_dir": "",
           "config": {"save": {"run_name": "flux3-lora", "comfyui": False}, "model": {"base": "demo"},
                      "dataset": {"trigger_word": "ohwx", "resolution": 512}, "lora": {"rank": 16},
                      "optimizer": {"lr": 1e-4}, "schedule": {"max_steps": 20}}}
    card = runs.model_card(job, lang)
    assert t("card.usage_diffusers", lang, file="flux3-lora.safetensors") in card
    assert "-comfyui.safetensors" not in card
    both = runs.model_card({**job, "config": {**job["config"], "save": {"run_name": "flux3-lora"}}}, lang)
    assert "flux3-lora-comfyui.safetensors" in both
