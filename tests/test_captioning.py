"""Captioning end to end on tiny random BLIP / Florence-2 models built offline from configs."""

from __future__ import annotations

import time

import pytest
from PIL import Image

from studio.captioning import (
    BasicCaptioner,
    BlipCaptioner,
    CaptionerUnavailable,
    CaptionStyle,
    FlorenceCaptioner,
    caption_dataset,
    load_captioner,
    non_latin_warning,
    style_caption,
    words_from_filename,
)

WORDS = ["a", "photo", "of", "dog", "cat", "on", "grass", "red", "the", "with"]


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    out = tmp_path_factory.mktemp("tiny-blip")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + WORDS)}
    tok = BertTokenizer(vocab=vocab, bos_token="[DEC]")
    text = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=37, max_position_embeddings=64, encoder_hidden_size=32,
                bos_token_id=vocab["[DEC]"], sep_token_id=vocab["[SEP]"], pad_token_id=0, eos_token_id=vocab["[SEP]"])
    vision = dict(hidden_size=32, image_size=32, patch_size=8, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=37)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=32))
    with torch.no_grad():  # make the random decoder say "dog" so the output is a readable word
        model.text_decoder.cls.predictions.bias[vocab["dog"]] = 50.0
    model.save_pretrained(out)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_florence(tmp_path_factory):
    import torch
    from transformers import (BartTokenizer, CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor)

    out = tmp_path_factory.mktemp("tiny-florence")
    symbols = list("abcdefghijklmnopqrstuvwxyz.,<>_ABCDEFGHIJKLMNOPQRSTUVWXYZ") + ["Ġ" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "Ġ"] + symbols)}
    tok = BartTokenizer(vocab=vocab, merges=[], extra_special_tokens={"image_token": "<image>"})
    text = dict(model_type="bart", vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1,
                encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37,
                max_position_embeddings=128, bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2)
    vision = dict(depths=[1, 1, 1, 1], embed_dim=[8, 16, 16, 32], num_heads=[1, 1, 1, 1], num_groups=[1, 1, 1, 1],
                  window_size=2, projection_dim=32, drop_path_rate=0.0)
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(Florence2Config(text_config=text, vision_config=vision,
                                                              image_token_id=tok.image_token_id))
    # 64 px through four stride-2+ stages is a 2x2 grid, plus one pooled token: 5 image tokens.
    proc = CLIPImageProcessor(size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64},
                              do_center_crop=False)
    proc.image_seq_length = 5
    model.save_pretrained(out)
    Florence2Processor(image_processor=proc, tokenizer=tok).save_pretrained(out)
    return out


def make_images(tmp_path, names=("dog_on_grass", "IMG_0001", "red_cat")):
    images = tmp_path / "ds" / "images"
    images.mkdir(parents=True)
    for i, n in enumerate(names):
        Image.new("RGB", (48 + 8 * i, 40), (40 * i, 100, 200)).save(images / f"{n}.png")
    return tmp_path / "ds"


def test_blip_end_to_end_writes_captions_and_never_overwrites(tmp_path, tiny_blip):
    ds = make_images(tmp_path)
    (ds / "images" / "red_cat.txt").write_text("hand-written caption")
    calls = []
    captioner = load_captioner(str(tiny_blip), batch_size=2, max_new_tokens=4)
    assert isinstance(captioner, BlipCaptioner) and captioner.device in ("cpu", "cuda")
    raw = captioner.caption([Image.new("RGB", (40, 40))] * 3, progress=lambda d, t: calls.append((d, t)))
    assert raw == ["dog dog dog dog"] * 3 and calls == [(2, 3), (3, 3)]

    run = caption_dataset(ds, captioner, CaptionStyle(trigger_word="sks"), batch_size=2,
                          progress=lambda d, t: calls.append((d, t)))
    assert run.written == ["IMG_0001", "dog_on_grass"] and run.skipped == ["red_cat"]
    assert (ds / "images" / "dog_on_grass.txt").read_text() == "sks, dog dog dog dog"
    assert (ds / "images" / "red_cat.txt").read_text() == "hand-written caption"

    # Re-running changes nothing; overwrite=True with only_missing=False redoes everything.
    assert caption_dataset(ds, captioner).written == []
    run = caption_dataset(ds, captioner, overwrite=True, only_missing=False)
    assert sorted(run.written) == ["IMG_0001", "dog_on_grass", "red_cat"]
    assert (ds / "images" / "red_cat.txt").read_text() == "dog dog dog dog"
    captioner.close()
    with pytest.raises(RuntimeError):
        captioner.caption([Image.new("RGB", (8, 8))])


def test_florence_end_to_end(tmp_path, tiny_florence):
    ds = make_images(tmp_path, names=("one", "two"))
    with load_captioner(str(tiny_florence), task="<DETAILED_CAPTION>", max_new_tokens=5) as captioner:
        assert isinstance(captioner, FlorenceCaptioner) and captioner.task == "<DETAILED_CAPTION>"
        texts = captioner.caption([Image.new("RGB", (50, 40), "red"), Image.new("RGB", (30, 60), "blue")])
        assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
        run = caption_dataset(ds, captioner, CaptionStyle(trigger_word="sks", placement="end"))
    assert run.written == ["one", "two"]
    assert all((ds / "images" / f"{s}.txt").read_text().endswith("sks") for s in run.written)


def test_offline_missing_model_fails_fast_with_a_helpful_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(CaptionerUnavailable) as err:
        load_captioner("no-such-org/no-such-captioner-model")
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "no-such-org/no-such-captioner-model" in message and "HF_HUB_OFFLINE" in message
    assert "cache" in message.lower() and "hf download" in message and "basic" in message


def test_unreachable_hub_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    with pytest.raises(CaptionerUnavailable, match="cannot be reached|offline"):
        BlipCaptioner("no-such-org/another-missing-model")
    assert time.monotonic() - start < 10


def test_bad_local_folders_are_explained(tmp_path):
    with pytest.raises(CaptionerUnavailable, match="no config.json"):
        load_captioner(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(CaptionerUnavailable, match="florence2.*blip|Florence-2"):
        load_captioner(str(tmp_path))
    with pytest.raises(CaptionerUnavailable, match="does not exist"):
        load_captioner(str(tmp_path / "missing"))


def test_basic_captioner_through_caption_dataset(tmp_path):
    ds = make_images(tmp_path)
    run = caption_dataset(ds, load_captioner("basic", class_word="dog", trigger_word="sks"))
    assert sorted(run.written) == ["IMG_0001", "dog_on_grass", "red_cat"]
    assert (ds / "images" / "dog_on_grass.txt").read_text() == "sks dog, dog on grass"
    assert (ds / "images" / "IMG_0001.txt").read_text() == "sks dog"
    assert BasicCaptioner("person").caption([Image.new("RGB", (4, 4))]) == ["person"]
    assert words_from_filename("DSC_0042_BeachSunset-final.jpg") == ["beach", "sunset"]


def test_style_caption():
    assert style_caption("The image shows a man riding a horse.", "sks") == "sks, a man riding a horse."
    assert style_caption("In this image, there is a red car", "sks", placement="end") == "a red car, sks"
    assert style_caption("This is an image of arafed dog", None) == "dog"
    assert style_caption("a photo of sks dog", "sks") == "a photo of sks dog"  # no double trigger
    assert style_caption("The image shows a cat", "sks", placement="none", strip_boilerplate=False) == "The image shows a cat"
    assert style_caption("a b", "t", prefix="photo of", suffix="film grain") == "photo of t, a b, film grain"
    long = style_caption("word " * 100, "sks", max_chars=40)
    assert long.startswith("sks, word") and len(long) <= 40
    with pytest.raises(ValueError):
        style_caption("x", "t", placement="middle")


def test_non_latin_warning():
    assert non_latin_warning("a dog on the grass") is None
    assert "English" in non_latin_warning("草地上的一只狗", "a.txt") and "a.txt" in non_latin_warning("草地上的一只狗", "a.txt")
    assert non_latin_warning("café crème brûlée") is None
