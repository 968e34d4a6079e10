"""FLUX.1 Kontext edit LoRAs on the tiny offline Kontext model: the objective, learning, the
diffusers file in FluxKontextPipeline, resume, pairs-only datasets and a worker job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import Events, make_images, tiny_config
from engine_checks import (assert_lora_changes_output, assert_resume_is_bitwise_exact, assert_same_delta_weights,
                           assert_step_matches, memorising_settings, one_step, quiet_pipeline, replay, resume_settings,
                           run_with_data_folder)
from faulty_trainer import FaultHooks
from studio.config import ConfigError, resolve
from studio.engine import train
from studio.events import EXIT_FAILED, EXIT_OK
from studio.train.step import loss as step_loss

INSTRUCTION = "flip it left to right"


@pytest.fixture(scope="module")
def kontext_model(tmp_path_factory) -> Path:
    from studio.families import get_family
    return get_family("flux1-kontext").build_tiny(tmp_path_factory.mktemp("models") / "kontext")


def make_pairs(folder: Path, count: int = 2, control_size=(64, 64)) -> Path:
    """Pairs whose edit is a mirror image: control/<stem>.png → <stem>.png, with the instruction."""
    (folder / "control").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(count):
        w, h = control_size
        y, x = np.mgrid[0:h, 0:w]
        im = Image.fromarray(np.stack([x * 255 / w, y * 255 / h, np.full_like(x, 60 * i)], -1).astype(np.uint8))
        cx, cy = (int(v * w / 64) for v in rng.integers(12, 28, 2))
        ImageDraw.Draw(im).ellipse((cx - w // 6, cy - h // 6, cx + w // 6, cy + h // 6), fill=(250, 240, 20))
        im.save(folder / "control" / f"pair_{i}.png")
        im.resize((64, 64), Image.Resampling.LANCZOS).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
            folder / f"pair_{i}.png")
        (folder / f"pair_{i}.txt").write_text(INSTRUCTION)
    return folder


def edit_config(model_dir, pairs, out, **sections):
    from studio.config import deep_merge
    return tiny_config(model_dir, pairs, out, **deep_merge({"sample": {"prompts": [INSTRUCTION]}}, sections))


def run(cfg_dict, run_dir, resume=False, fault=""):
    events = Events()
    return train(resolve(cfg_dict, tier="cpu"), run_dir, events, resume=resume, hooks=FaultHooks(fault)), events


def test_detected_by_its_pipeline(kontext_model):
    from studio.families import inspect_model

    info = inspect_model(str(kontext_model))
    assert (info.family_name, info.variant, info.token_limit) == ("flux1-kontext", "dev", 512)
    assert info.model_family.kind == "edit" and "non-commercial" in info.licence.lower()


# --------------------------------------------------------------------------- the objective


def test_one_step_matches_the_kontext_objective(kontext_model, tmp_path, studio_data):
    """The engine's loss and LoRA gradients equal the Kontext I2I objective written here with
    FluxKontextPipeline's own helpers: reference latents (VAE mode) packed after the noisy target
    tokens, their ids' first coordinate 1, the loss on the target tokens only."""
    from diffusers import FluxKontextPipeline

    dataset = make_pairs(tmp_path / "pairs", count=1, control_size=(128, 128))
    cfg = resolve(edit_config(kontext_model, dataset, tmp_path / "out", lora={"rank": 4, "alpha": 8}), tier="cpu")
    trainer, loss, grads, state = one_step(cfg, tmp_path / "run")

    gen = replay(state)
    pipe = FluxKontextPipeline.from_pretrained(str(kontext_model))
    vae = pipe.vae.config

    def pixels(im):
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]

    control = Image.open(dataset / "control" / "pair_0.png").convert("RGB").resize((64, 64), Image.Resampling.LANCZOS)
    with torch.no_grad():
        embeds, pooled, text_ids = pipe.encode_prompt(INSTRUCTION, None, max_sequence_length=512)
        mean, logvar = pipe.vae.encode(pixels(Image.open(dataset / "pair_0.png"))).latent_dist.parameters.chunk(2, 1)
        reference = (pipe.vae.encode(pixels(control)).latent_dist.mode() - vae.shift_factor) * vae.scaling_factor
    std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
    latents = (mean + std * torch.randn(mean.shape, generator=gen) - vae.shift_factor) * vae.scaling_factor
    noise = torch.randn(latents.shape, generator=gen)
    sigma = torch.sigmoid(torch.randn((1,), generator=gen) * cfg.training.logit_std)
    s = cfg.training.shift
    t = s * sigma / (1 + (s - 1) * sigma)
    noisy = (1 - t) * latents + t * noise
    b, c, h, w = latents.shape
    tokens = FluxKontextPipeline._pack_latents(noisy, b, c, h, w)
    n_target = tokens.shape[1]
    tokens = torch.cat([tokens, FluxKontextPipeline._pack_latents(reference, b, c, h, w)], dim=1)
    img_ids = FluxKontextPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", torch.float32)
    ref_ids = FluxKontextPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", torch.float32)
    ref_ids[..., 0] = 1
    pred = trainer.transformer(hidden_states=tokens, timestep=t, guidance=torch.ones(1), pooled_projections=pooled,
                               encoder_hidden_states=embeds, txt_ids=text_ids,
                               img_ids=torch.cat([img_ids, ref_ids]), return_dict=False)[0][:, :n_target]
    pred = FluxKontextPipeline._unpack_latents(pred, h * 8, w * 8, 8)
    assert_step_matches(trainer, loss, grads, ((pred - (noise - latents)) ** 2).mean(), loss_tolerance=1e-5,
                        rtol=1e-5, atol=1e-5)
    assert_the_reference_conditions_the_loss(trainer, state, loss)


def assert_the_reference_conditions_the_loss(trainer, state, loss) -> None:
    """The reference tokens condition the prediction: with another control (random latent parameters)
    the same step (generator at `state`) gives another loss."""
    ids = trainer.plan[0]
    trainer.caches.controls[ids[0]] = torch.randn_like(trainer.caches.controls[ids[0]])
    trainer.generator.set_state(state)
    with torch.no_grad():
        assert abs(step_loss(trainer, ids).item() - loss.item()) > 1e-4


# --------------------------------------------------------------------------- learning and the files


@pytest.fixture(scope="module")
def trained(kontext_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("trained-kontext")
    dataset = make_pairs(root / "pairs", count=2)
    cfg = edit_config(kontext_model, dataset, root / "out", **memorising_settings(lr=3e-3, rank=8, max_steps=80),
                      sample={"every": 40, "at_start": True})
    run_dir, code, events = run_with_data_folder(run, cfg, root)
    assert code == EXIT_OK, events.of("error")
    return run_dir, dataset, events


def kontext_pipe(model):
    from diffusers import FluxKontextPipeline

    return quiet_pipeline(FluxKontextPipeline, model)


def memorisation_error(pipe, dataset: Path, stem: str) -> float:
    """Flow-matching error of the pipeline's transformer on one pair at fixed noise and t = 0.6,
    computed with the pipeline's own helpers."""
    from diffusers import FluxKontextPipeline

    vae = pipe.vae.config

    def encode(path):
        x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1)
        return (pipe.vae.encode(x.permute(2, 0, 1)[None]).latent_dist.mode() - vae.shift_factor) * vae.scaling_factor

    with torch.no_grad():
        embeds, pooled, text_ids = pipe.encode_prompt(INSTRUCTION, None, max_sequence_length=512)
        x0, ref = encode(dataset / f"{stem}.png"), encode(dataset / "control" / f"{stem}.png")
        b, c, h, w = x0.shape
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(11))
        t = torch.tensor([0.6])
        tokens = torch.cat([FluxKontextPipeline._pack_latents((1 - t) * x0 + t * noise, b, c, h, w),
                            FluxKontextPipeline._pack_latents(ref, b, c, h, w)], dim=1)
        ids = FluxKontextPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", torch.float32)
        ref_ids = ids.clone()
        ref_ids[..., 0] = 1
        pred = pipe.transformer(hidden_states=tokens, timestep=t, guidance=torch.ones(1), pooled_projections=pooled,
                                encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=torch.cat([ids, ref_ids]),
                                return_dict=False)[0][:, : (h // 2) * (w // 2)]
        target = FluxKontextPipeline._pack_latents(noise - x0, b, c, h, w)
    return float(((pred - target) ** 2).mean())


def test_the_lora_memorises_the_edit(trained, kontext_model):
    run_dir, dataset, events = trained
    pipe = kontext_pipe(kontext_model)
    before = [memorisation_error(pipe, dataset, f"pair_{i}") for i in range(2)]
    pipe.load_lora_weights(str(run_dir / "test-lora.safetensors"), adapter_name="edit")
    after = [memorisation_error(pipe, dataset, f"pair_{i}") for i in range(2)]
    for b, a in zip(before, after):
        assert a < 0.9 * b, (before, after)  # a random tiny model has a high floor (observed ~0.8)
    samples = events.of("sample")
    assert sorted({e["step"] for e in samples}) == [0, 40, 80]
    image = Image.open(run_dir / samples[-1]["path"])
    assert image.text["prompt"] == INSTRUCTION and image.text["control"] == "pair_0.png"


def test_diffusers_file_loads_in_the_kontext_pipeline(trained, kontext_model):
    from safetensors import safe_open

    run_dir = trained[0]
    pipe = kontext_pipe(kontext_model)
    control = Image.open(trained[1] / "control" / "pair_1.png").convert("RGB")

    def edit():
        return pipe(image=control, prompt=INSTRUCTION, height=64, width=64, max_area=64 * 64, _auto_resize=False,
                    num_inference_steps=2, guidance_scale=2.5, max_sequence_length=64,
                    generator=torch.Generator().manual_seed(7), output_type="np").images[0]

    assert_lora_changes_output(pipe, run_dir / "test-lora.safetensors", edit)
    for name in ("test-lora.safetensors", "test-lora-comfyui.safetensors"):
        with safe_open(str(run_dir / name), "pt") as f:
            meta = f.metadata()
        assert meta["model_family"] == "flux1-kontext" and meta["model_variant"] == "dev", name
        assert meta["modelspec.architecture"] == "flux-1-kontext-dev/lora"


def test_comfyui_file_has_the_same_delta_weights(trained):
    from studio.lora_files import delta_weights

    run_dir = trained[0]
    assert_same_delta_weights(delta_weights(run_dir / "test-lora.safetensors"),
                              delta_weights(run_dir / "test-lora-comfyui.safetensors"))


# --------------------------------------------------------------------------- resume, refusals, the worker


def test_resume_is_bitwise_exact(kontext_model, tmp_path, studio_data):
    dataset = make_pairs(tmp_path / "pairs", count=3)
    cfg = edit_config(kontext_model, dataset, tmp_path / "out", **resume_settings(8))
    assert_resume_is_bitwise_exact(run, cfg, tmp_path, at=4)


def test_edit_samples_can_be_guided_against_the_empty_prompt(kontext_model, tmp_path, studio_data):
    """sample.true_cfg reaches FluxKontextPipeline with the input image: the base's first sample of
    the same prompt, seed and input differs with it."""
    dataset = make_pairs(tmp_path / "pairs", count=1)
    drawn = {}
    for true_cfg in (1.0, 3.0):
        cfg = edit_config(kontext_model, dataset, tmp_path / f"out{true_cfg}", schedule={"max_steps": 1},
                          sample={"at_start": True, "true_cfg": true_cfg})
        code, events = run(cfg, tmp_path / f"run{true_cfg}")
        assert code == EXIT_OK, events.of("error")
        first = events.of("sample")[0]
        assert first["step"] == 0
        drawn[true_cfg] = np.asarray(Image.open(tmp_path / f"run{true_cfg}" / first["path"]), dtype=np.int16)
    assert np.abs(drawn[1.0] - drawn[3.0]).mean() > 0.5


def test_a_dataset_without_pairs_is_refused_by_name(kontext_model, tmp_path, studio_data):
    images = make_images(tmp_path / "photos", count=2)
    code, events = run(edit_config(kontext_model, images, tmp_path / "out"), tmp_path / "run")
    error = events.of("error")[0]
    assert code == EXIT_FAILED and error["code"] == "NO_PAIRS"
    assert str(images / "control") in error["message"]


def test_targets_without_a_control_are_skipped_with_a_warning(kontext_model, tmp_path, studio_data):
    dataset = make_pairs(tmp_path / "pairs", count=2)
    (dataset / "control" / "pair_1.png").unlink()
    code, events = run(edit_config(kontext_model, dataset, tmp_path / "out", schedule={"max_steps": 1}),
                       tmp_path / "run")
    assert code == EXIT_OK and events.of("start")[0]["num_images"] == 1
    assert any("pair_1.png" in w["message"] and w["code"] == "NO_IMAGES" for w in events.of("warning"))


@pytest.mark.engine
def test_worker_runs_an_edit_job_from_an_imported_pairs_dataset(kontext_model, tmp_path):
    from studio.data.ingest import ingest
    from studio.jobs import JobStore
    from studio.worker import Worker

    upload = tmp_path / "upload"
    make_pairs(upload / "source", count=2, control_size=(320, 320))
    (upload / "target").mkdir()
    for i in range(2):  # import wants 256 px and more: the targets at 320 px, in target/
        Image.open(upload / "source" / f"pair_{i}.png").resize((320, 320)).save(upload / "target" / f"pair_{i}.png")
        (upload / "source" / f"pair_{i}.txt").rename(upload / "target" / f"pair_{i}.txt")
        (upload / "source" / f"pair_{i}.png").unlink()
    (upload / "source" / "control").rename(upload / "control")
    (upload / "source").rmdir()
    result = ingest([upload], tmp_path / "data" / "datasets" / "edits")
    assert sorted(result.pairs) == ["pair_0", "pair_1"] and not result.rejected, result.summary()

    config = resolve(edit_config(kontext_model, tmp_path / "data" / "datasets" / "edits", tmp_path / "out",
                                 schedule={"max_steps": 3}, save={"every": 2, "run_name": "edit"},
                                 sample={"at_start": True}), tier="cpu")
    store = JobStore(tmp_path / "data")
    job_id = store.create_job("edit", config.to_dict())
    Worker(tmp_path / "data", poll_interval=0.1).run_once()
    job = store.get_job(job_id)
    assert job["status"] == "succeeded", (job["error_message"], job["advice"])
    assert job["step"] == 3 and len(job["files"]) == 2
    samples = store.events(job_id, types=["sample"])
    assert samples and all(Path(job["run_dir"], e["path"]).is_file() for e in samples)
    assert Image.open(Path(job["run_dir"], samples[0]["path"])).text["control"] == "pair_0.png"

    # The report card edits the run's first "before" image; try-it edits the picture it is given.
    from studio.events import JsonlReporter
    from studio.jobs.tryit import run as try_it
    from studio.report_card import build_report_card

    card = build_report_card(job["run_dir"], data_dir=tmp_path / "data")
    assert len(card["grids"]) == 1 and Path(job["run_dir"], "report", card["grids"][0]).is_file()
    out = tmp_path / "tryit"
    out.mkdir()
    lora = next(f for f in job["files"] if not f.endswith("-comfyui.safetensors"))
    request = {"base": str(kontext_model), "lora": str(Path(job["run_dir"]) / lora), "prompt": INSTRUCTION,
               "strength": 1.0, "seed": 1, "width": 64, "height": 64, "steps": 2, "guidance": 2.5}
    drawn = {}
    for name in ("pair_0", "pair_1"):
        reporter = JsonlReporter(out / f"{name}.jsonl")
        try_it({**request, "image": str(tmp_path / "data/datasets/edits/images/control" / f"{name}.png")}, out,
               reporter, tmp_path / "data")
        reporter.close()
        drawn[name] = [np.asarray(Image.open(out / f"{n}.png")).copy() for n in ("before", "without", "with")]
    assert not np.array_equal(drawn["pair_0"][0], drawn["pair_1"][0])  # before.png is the input given
    assert not np.array_equal(drawn["pair_0"][1], drawn["pair_1"][1])  # the base edits that input
    assert not np.array_equal(drawn["pair_0"][2], drawn["pair_0"][1])  # and the LoRA changes the edit


def test_the_edit_preset_suits_the_families_that_edit():
    from studio.config import load_preset, validate

    preset = load_preset("edit")
    assert preset.families == ["flux1-kontext", "flux2-klein", "flux2-dev"]  # every family that trains from pairs
    assert load_preset("portrait").families is None
    cfg = resolve({"dataset": {"path": "/x"}, "model": {"family": "flux1-kontext"}}, preset="edit", tier="cpu")
    with pytest.raises(ConfigError, match="not for the flux1 model family"):  # the demo model cannot edit
        resolve({"dataset": {"path": "/x"}}, preset="edit", tier="cpu")
    assert validate(cfg) == [] and cfg.sample.prompts[0].startswith("make it")
