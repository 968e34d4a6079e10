"""The demo model's world, text path, judge, dataset and build command (no trained weights needed)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from studio.demo.judge import judge
from studio.demo.world import COLOURS, SHAPES, Scene, caption, draw, sample


def test_world_is_seeded_and_says_what_is_drawn():
    a, caption_a, scene = sample(7)
    b, caption_b, _ = sample(7)
    assert np.array_equal(np.asarray(a), np.asarray(b)) and caption_a == caption_b
    assert a.size == (128, 128)
    assert scene.colour in caption_a and scene.shape in caption_a
    assert caption(Scene("star", "orange", ("blue", "white"))) == "an orange star on a blue and white background"
    seen = {(s.shape, s.colour) for s in (sample(i)[2] for i in range(400))}
    assert len(seen) == len(SHAPES) * len(COLOURS)  # every shape in every colour


def test_judge_names_every_world_picture():
    rng = random.Random(3)
    for i in range(48):
        colour = list(COLOURS)[i % 8]
        background = rng.choice([c for c in COLOURS if c != colour])
        scene = Scene(SHAPES[i % 4], colour, (background,), centre=(rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)),
                      radius=rng.uniform(0.17, 0.36))
        verdict = judge(draw(scene))
        assert (verdict.colour, verdict.shape, verdict.template, verdict.background) == \
            (colour, scene.shape, scene.shape, background), scene


def test_outline_judge_names_world_pictures_turned_and_blurred():
    """What a human names at a glance: the outline judge still does; the template judge, which fits
    the world's upright shapes, misses some (it is the stricter of the two)."""
    from PIL import ImageFilter
    rng = random.Random(5)
    template_right = 0
    for i in range(48):
        scene = Scene(SHAPES[i % 4], list(COLOURS)[i % 8], (list(COLOURS)[(i + 3) % 8],),
                      centre=(rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65)), radius=rng.uniform(0.2, 0.36))
        image = draw(scene)
        image = image.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BICUBIC, fillcolor=image.getpixel((1, 1)))
        verdict = judge(image.filter(ImageFilter.GaussianBlur(1.5)))
        assert verdict.shape == scene.shape, (scene, verdict)
        template_right += verdict.template == scene.shape
    assert template_right < 48


def test_corner_rhythms_count_the_corners():
    from studio.demo.judge import ROUND, corner_rhythms
    from studio.demo.world import shape_polygon

    def mask(shape):
        picture = Image.new("L", (128, 128), 0)
        outline = shape_polygon(shape, (24, 24, 104, 104))
        (ImageDraw.Draw(picture).ellipse if outline is None else ImageDraw.Draw(picture).polygon)(
            (24, 24, 104, 104) if outline is None else outline, fill=255)
        return np.asarray(picture) >= 128

    assert max(corner_rhythms(mask("circle")).values()) < ROUND / 3
    for shape, corners in (("triangle", 3), ("square", 4), ("star", 5)):
        rhythms = corner_rhythms(mask(shape))
        assert max(rhythms, key=rhythms.get) == corners and rhythms[corners] > 2 * ROUND, (shape, rhythms)


def test_judge_sees_nothing_in_a_plain_picture_and_a_wrong_shape_as_wrong():
    assert judge(Image.new("RGB", (128, 128), COLOURS["blue"])).colour is None
    from studio.demo.dataset import concept_picture
    heart, _ = concept_picture(random.Random(0))
    verdict = judge(heart)
    assert verdict.fit < 0.9  # a heart fits none of the world's templates well


def test_demo_dataset_is_a_folder_of_captioned_pictures_outside_the_world(tmp_path):
    from studio.demo.dataset import CONCEPT, TRIGGER, write_dataset

    folder = write_dataset(tmp_path / "demo", count=5, seed=1)
    pictures = sorted(folder.glob("*.png"))
    assert len(pictures) == 5
    for picture in pictures:
        text = picture.with_suffix(".txt").read_text(encoding="utf-8")
        assert TRIGGER in text.split() and CONCEPT not in text and "background" in text
        assert Image.open(picture).size == (256, 256)  # the Dataset tab's import accepts 256 px and up
    assert CONCEPT not in SHAPES


@pytest.fixture(scope="module")
def text_path():
    from studio.demo import text
    clip_tok, t5_tok = text.train_tokenizers()
    torch.manual_seed(0)
    return clip_tok, t5_tok, text.make_clip(clip_tok, 32), text.make_t5(t5_tok, 32)


def test_tokenizers_know_every_word_and_symbol(text_path):
    clip_tok, t5_tok, _, _ = text_path
    prompt = "A Red circle, on a white background. (zxq) sks 42!"
    assert clip_tok.eos_token_id not in clip_tok(prompt)["input_ids"][1:-1]  # CLIP's unknown id is its end
    assert t5_tok.unk_token_id not in t5_tok(prompt)["input_ids"]
    for word in ("red", "circle", "background", "zxq"):
        assert len(t5_tok(word, add_special_tokens=False)["input_ids"]) == 1, word


def test_t5_encoding_does_not_depend_on_padding(text_path):
    """FluxPipeline pads T5 to max_sequence_length (256 in the engine, 512 by default) with no mask."""
    _, t5_tok, _, t5 = text_path
    prompt = "a red circle on a white background"
    with torch.no_grad():
        short, long = (t5(t5_tok([prompt], padding="max_length", max_length=n, return_tensors="pt").input_ids)[0]
                       for n in (32, 512))
    torch.testing.assert_close(short[0], long[0, :32])
    torch.testing.assert_close(long[0, 40], long[0, 500])  # padding far from the words is all alike
    with torch.no_grad():
        swapped = t5(t5_tok(["a white circle on a red background"], return_tensors="pt").input_ids)[0]
    # The colour word next to "circle" is encoded differently from the same word next to "background".
    assert not torch.allclose(short[0, 1], swapped[0, 5], atol=1e-3)


def test_clip_learns_to_name_what_a_caption_asks_for(text_path):
    from studio.demo import text

    clip_tok, _, clip, _ = text_path
    assert text.teach_clip(clip, clip_tok, steps=60, batch=32, log=lambda line: None) > 0.5


def test_build_demo_command_writes_a_pipeline_that_loads_and_generates(tmp_path):
    """`python -m studio build-demo` end to end, every stage shortened (a smoke build, not a usable model)."""
    import json

    from diffusers import FluxPipeline

    from studio.__main__ import main

    out = tmp_path / "demo-model"
    threads = torch.get_num_threads()
    try:
        assert main(["build-demo", str(out), "--seed", "3", "--scale", "0.003", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)  # process-wide: the rest of the suite keeps its threads
    record = json.loads((out / "build.json").read_text())
    assert record["seed"] == 3 and set(record["seconds"]) == {"text", "vae", "encode", "transformer"}
    assert "build-demo" in (out / "README.md").read_text() and not (tmp_path / "demo-model.partial").exists()
    pipe = FluxPipeline.from_pretrained(str(out))
    assert pipe.transformer.dtype == torch.float32  # stored in fp16, loaded as fp32
    assert pipe.transformer.config.in_channels == 64 and pipe.vae.config.latent_channels == 16
    image = pipe("a red circle on a white background", num_inference_steps=2, height=128, width=128,
                 max_sequence_length=256, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (128, 128)


def test_build_demo_never_replaces_a_folder_that_is_not_a_demo_model(tmp_path, capsys):
    """The build replaces its output folder at the end: a folder of other files, or a file, is refused
    by name before any training, and left as it was."""
    from studio.__main__ import main
    from studio.core.vocab import EXIT_USAGE

    mine = tmp_path / "my-photos"
    mine.mkdir()
    (mine / "cat.jpg").write_bytes(b"not really")
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    for target in (mine, afile):
        assert main(["build-demo", str(target), "--scale", "0.003"]) == EXIT_USAGE
        assert str(target) in capsys.readouterr().err
    assert (mine / "cat.jpg").read_bytes() == b"not really" and afile.read_text() == "keep me"
