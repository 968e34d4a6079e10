"""FLUX.2 edit LoRAs (reference images) on the tiny offline [klein] model: which runs are edit runs,
the step against the objective built from Flux2KleinPipeline's own helpers, learning a pair, the
diffusers file in Flux2KleinPipeline(image=...), and a worker job with its samples, report card,
try-it and model card."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_images, tiny_config
from engine_checks import assert_lora_changes_output, assert_step_matches, memorising_run, one_step, pixels, replay, run
from flux2_helpers import cases, learning_config, noised, pipeline, reference, velocity_error
from studio.config import deep_merge, resolve
from studio.diagnostics import StudioError
from studio.families.base import EDIT, TEXT_TO_IMAGE, get_family, run_mode
from test_family_kontext import INSTRUCTION, assert_the_reference_conditions_the_loss, make_pairs

pytestmark = pytest.mark.engine
KLEIN = get_family("flux2-klein")


@pytest.fixture(scope="module")
def klein(tmp_path_factory) -> Path:
    return KLEIN.build_tiny(tmp_path_factory.mktemp("klein-edit") / "tiny")


def edit_config(model, pairs, out, **sections):
    return tiny_config(model, pairs, out, **deep_merge({"sample": {"prompts": [INSTRUCTION]}}, sections))


# --------------------------------------------------------------------------- which runs edit


def test_the_mode_follows_the_family_and_the_dataset(tmp_path):
    from studio.data.dataset import load_samples

    pairs = make_pairs(tmp_path / "pairs", count=2)
    photos = make_images(tmp_path / "photos", count=2)
    for name in ("flux2-klein", "flux2-dev"):
        family = get_family(name)
        assert family.reference_images and family.kind == TEXT_TO_IMAGE
        assert (run_mode(family, pairs), run_mode(family, photos)) == (EDIT, TEXT_TO_IMAGE)
    assert run_mode(get_family("flux1"), pairs) == TEXT_TO_IMAGE  # FLUX.1 takes no reference image
    kontext = get_family("flux1-kontext")
    assert run_mode(kontext, photos) == EDIT  # edit-only: a dataset without pairs is refused by name
    cfg = resolve({"dataset": {"path": str(photos), "resolution": 64}}, tier="cpu")
    with pytest.raises(StudioError) as refused:
        load_samples(cfg, edit=run_mode(kontext, photos) == EDIT)
    assert refused.value.code == "NO_PAIRS" and str(photos / "control") in str(refused.value)
    samples = load_samples(cfg, edit=run_mode(KLEIN, photos) == EDIT)  # klein without pairs: text-to-image
    assert len(samples) == 2 and all(s.control is None for s in samples)


# --------------------------------------------------------------------------- the objective


def test_edit_step_equals_the_flux2_reference_objective(klein, tmp_path):
    """Loss and LoRA gradients of one edit step equal the objective written with Flux2KleinPipeline's
    own helpers: the "before" image's latents as the pipeline prepares `image=` (mode, patches, batch
    norm, ids with time coordinate 10) joined after the noisy target tokens, the loss on the target."""
    dataset = make_pairs(tmp_path / "pairs", count=1, control_size=(128, 128))
    cfg = resolve(edit_config(klein, dataset, tmp_path / "out", lora={"rank": 4, "alpha": 8},
                              training={"timestep_sampling": "resolution_shift"}), tier="cpu")
    trainer, loss, grads, state = one_step(cfg, tmp_path / "run", tmp_path / "data")
    assert trainer.mode == EDIT and trainer.sample_controls == [dataset / "control" / "pair_0.png"]

    pipe = pipeline(klein)
    gen = replay(state)
    control = Image.open(dataset / "control" / "pair_0.png").convert("RGB").resize((64, 64), Image.Resampling.LANCZOS)
    with torch.no_grad():
        embeds, text_ids = pipe.encode_prompt(prompt=INSTRUCTION, max_sequence_length=512)
        x0 = pipe._encode_vae_image(pixels(dataset / "pair_0.png"), generator=None)
    ref_tokens, ref_ids = reference(pipe, control)
    assert ref_ids[0, :, 0].unique().tolist() == [10]
    noise, t, noisy = noised(x0, gen, cfg.training.logit_std)
    img_ids = pipe._prepare_latent_ids(noisy)
    pred = trainer.transformer(hidden_states=torch.cat([pipe._pack_latents(noisy), ref_tokens], dim=1), timestep=t,
                               guidance=None, encoder_hidden_states=embeds, txt_ids=text_ids,
                               img_ids=torch.cat([img_ids, ref_ids], dim=1), return_dict=False)[0]
    pred = pipe._unpack_latents_with_ids(pred[:, : img_ids.shape[1]], img_ids)
    assert_step_matches(trainer, loss, grads, ((pred - (noise - x0)) ** 2).mean(), rtol=1e-4, atol=1e-6,
                        relative_loss=True)
    assert_the_reference_conditions_the_loss(trainer, state, loss)


# --------------------------------------------------------------------------- learning and the files


@pytest.fixture(scope="module")
def trained(klein, tmp_path_factory):
    root = tmp_path_factory.mktemp("klein-edit-trained")
    dataset = make_pairs(root / "pairs", count=2)
    cfg = learning_config(klein, dataset, root / "out", sample={"prompts": [INSTRUCTION], "at_start": True,
                                                                "guidance": 4.0})
    return memorising_run(run, cfg, root)


def test_the_lora_memorises_the_edit(trained, klein):
    """At fixed noise and noise levels, with each pair's "before" image as the pipeline's reference,
    the trained LoRA predicts the "after" image's velocity far better than the base model does."""
    run_dir, dataset, events = trained
    pipe = pipeline(klein)
    pictures = [(dataset / f"pair_{i}.png", INSTRUCTION,
                 reference(pipe, Image.open(dataset / "control" / f"pair_{i}.png").convert("RGB")))
                for i in range(2)]
    fixed = cases(pipe, pictures)
    base = velocity_error(pipe, fixed)
    pipe.load_lora_weights(str(run_dir / "test-lora.safetensors"), adapter_name="edit")
    learned = velocity_error(pipe, fixed)
    assert learned < 0.85 * base, (base, learned)
    assert events.of("start")[0]["mode"] == EDIT
    samples = events.of("sample")
    assert sorted({e["step"] for e in samples}) == [0, 50]
    assert Image.open(run_dir / samples[-1]["path"]).text["control"] == "pair_0.png"


def test_diffusers_file_edits_in_flux2_klein_pipeline(trained, klein):
    from studio.lora_files import read_metadata
    from studio.model_card import model_card

    run_dir, dataset, _ = trained
    pipe = pipeline(klein)
    control = Image.open(dataset / "control" / "pair_1.png").convert("RGB")

    def edit(image=control):
        return pipe(image=image, prompt=INSTRUCTION, height=64, width=64, num_inference_steps=2,
                    guidance_scale=1.0, generator=torch.Generator().manual_seed(7), output_type="np").images[0]

    assert not np.array_equal(edit(), edit(Image.open(dataset / "control" / "pair_0.png").convert("RGB")))
    assert_lora_changes_output(pipe, run_dir / "test-lora.safetensors", edit)
    for name in ("test-lora.safetensors", "test-lora-comfyui.safetensors"):
        meta = read_metadata(run_dir / name)
        assert (meta["model_family"], meta["training_mode"]) == ("flux2-klein", EDIT), name
    card = model_card(run_dir)
    assert "pipeline_tag: image-to-image" in card and "before/after pairs" in card
    assert "Flux2KleinPipeline" in card and 'image=load_image("before.png")' in card


# --------------------------------------------------------------------------- the worker


def test_worker_runs_a_klein_edit_job_with_its_report_card_and_try_it(klein, tmp_path):
    from studio.events import JsonlReporter
    from studio.jobs import JobStore
    from studio.jobs.tryit import run as try_it
    from studio.report_card import build_report_card
    from studio.worker import Worker

    dataset = make_pairs(tmp_path / "pairs", count=2)
    config = resolve(edit_config(klein, dataset, tmp_path / "out", schedule={"max_steps": 3},
                                 save={"run_name": "edit"}, sample={"at_start": True}), tier="cpu")
    store = JobStore(tmp_path / "data")
    job_id = store.create_job("edit", config.to_dict())
    Worker(tmp_path / "data", poll_interval=0.1).run_once()
    job = store.get_job(job_id)
    assert job["status"] == "succeeded", (job["error_message"], job["advice"])
    assert store.events(job_id, types=["start"])[0]["mode"] == EDIT
    samples = store.events(job_id, types=["sample"])
    assert samples and all(Image.open(Path(job["run_dir"], e["path"])).text["control"] == "pair_0.png"
                           for e in samples)

    card = build_report_card(job["run_dir"], data_dir=tmp_path / "data")
    assert len(card["grids"]) == 1 and Path(job["run_dir"], "report", card["grids"][0]).is_file()
    out = tmp_path / "tryit"
    out.mkdir()
    request = {"base": str(klein), "lora": str(Path(job["run_dir"]) / "edit.safetensors"), "prompt": INSTRUCTION,
               "strength": 1.0, "seed": 1, "width": 64, "height": 64, "steps": 2, "guidance": 1.0}
    drawn = {}
    for name in ("pair_0", "pair_1"):
        reporter = JsonlReporter(out / f"{name}.jsonl")
        try_it({**request, "image": str(dataset / "control" / f"{name}.png")}, out, reporter, tmp_path / "data")
        reporter.close()
        drawn[name] = [np.asarray(Image.open(out / f"{n}.png")).copy() for n in ("before", "without", "with")]
    assert not np.array_equal(drawn["pair_0"][0], drawn["pair_1"][0])  # before.png is the input given
    assert not np.array_equal(drawn["pair_0"][1], drawn["pair_1"][1])  # the base edits that input
    assert not np.array_equal(drawn["pair_0"][2], drawn["pair_0"][1])  # and the LoRA changes the edit
    reporter = JsonlReporter(out / "none.jsonl")
    with pytest.raises(StudioError) as caught:  # an edit LoRA needs its input picture
        try_it(request, out, reporter, tmp_path / "data")
    reporter.close()
    assert caught.value.code == "NO_INPUT_IMAGE"


def test_a_resume_whose_dataset_changed_the_mode_is_refused(klein, tmp_path):
    """A checkpoint records its run's mode; resuming after the control/ folder was removed (the run
    would turn text-to-image) is refused by name before anything is written, and goes on once the
    folder is back."""
    import json
    import shutil

    from studio.events import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK

    pairs = make_pairs(tmp_path / "pairs", count=2)
    cfg = edit_config(klein, pairs, tmp_path / "out", schedule={"max_steps": 3})
    run_dir, data = tmp_path / "out" / "run", tmp_path / "data"
    code, _ = run(cfg, run_dir, data, fault="sigterm@1")
    assert code == EXIT_INTERRUPTED
    checkpoint = next((run_dir / "checkpoints").glob("step*"))
    assert json.loads((checkpoint / "meta.json").read_text())["mode"] == EDIT
    shutil.move(pairs / "control", tmp_path / "control-aside")
    code, events = run(cfg, run_dir, data, resume=True)
    message = events.of("error")[0]["message"]
    assert code == EXIT_CONFIG and "trained in edit mode" in message and "text-to-image mode" in message, message
    assert not events.of("start")
    shutil.move(tmp_path / "control-aside", pairs / "control")
    code, events = run(cfg, run_dir, data, resume=True)
    assert code == EXIT_OK and events.of("start")[0]["start_step"] == 1
