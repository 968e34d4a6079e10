"""The demo model's text path: tokenizers, a CLIP text model and a T5 encoder, as FluxPipeline expects.

- Tokenizers are trained offline on the world's captions plus common words and every printable
  character, so no prompt a user types meets an unknown-token id (which, for CLIP, is its
  end-of-text id: the pooled vector would be read at the wrong place).
- CLIP (the pooled vector that modulates every transformer block) learns to name what a caption
  asks for: linear heads read shape, colour and background colours from its pooled output, and
  are thrown away afterwards. Its causal attention makes the pooled vector independent of padding.
- T5 stays random but local: its relative-position bias lets each token see only its two
  neighbours on either side, so "red circle" and "red background" give the colour word different
  encodings, and a word's encoding does not depend on how much padding follows the prompt.
"""

from __future__ import annotations

import math
import random
import re
import string
from collections import Counter

import torch

from .world import COLOURS, SHAPES, TEMPLATES, random_scene, with_articles

COMMON_WORDS = (
    "a an the of on in at with and or to by for from photo picture image drawing painting render "
    "illustration style person man woman cat dog house tree car street city beach forest mountain river "
    "sky cloud sun moon night light dark bright small large big tiny old new portrait close up wide shot "
    "studio outdoors indoors soft warm cold smiling standing sitting wearing holding table chair window "
    "room garden flower shirt hat glasses face hair eyes pink cyan magenta brown grey gray gold silver "
    "teal navy beige striped stripes checkered checkerboard dots dotted pattern heart ring cross diamond "
    "hexagon oval rectangle shape shapes colour color colours colors background foreground centre center "
    "left right top bottom corner one two three many simple flat bold pastel neon vivid sks ohwx zxq "
    "trigger concept token"
).split()
WINDOW = 2  # T5 tokens see this many neighbours on each side


def corpus(n: int = 6000, seed: int = 0):
    """Captions of the world in every wording, common words, and every printable character."""
    rng = random.Random(seed)
    for _ in range(n):
        scene = random_scene(rng)
        text = rng.choice(TEMPLATES).format(colour=scene.colour, shape=scene.shape,
                                            background=scene.background_words)
        yield with_articles(text)
        yield " ".join(rng.choice(COMMON_WORDS) for _ in range(rng.randint(3, 12)))
    symbols = string.ascii_letters + string.digits + string.punctuation
    for _ in range(50):  # each symbol alone and inside words, so that BPE knows both forms
        yield " ".join(symbols) + " " + symbols


def train_tokenizers(vocab_size: int = 1000, t5_max_length: int = 256):
    """CLIP: byte-pair merges learnt from the corpus. T5: a unigram model of the corpus's words."""
    from transformers import CLIPTokenizer, T5Tokenizer

    clip = CLIPTokenizer().train_new_from_iterator(corpus(), vocab_size=vocab_size)
    clip.model_max_length = 77  # FluxPipeline pads CLIP prompts to this
    t5 = T5Tokenizer(vocab=unigram_vocab(corpus()), extra_ids=0)
    t5.model_max_length = t5_max_length
    return clip, t5


def unigram_vocab(lines) -> list[tuple[str, float]]:
    """Pieces and log-probabilities for T5's Unigram model: every word of the corpus, whole
    (also capitalised), and every printable character as a fallback. (The `tokenizers` Unigram
    trainer, given a corpus this repetitive, keeps few whole words and spells "red" letter by letter.)"""
    counts = Counter(word for line in lines for word in re.findall(r"[a-z]+", line))
    total = sum(counts.values())
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]  # ids 0, 1, 2 as in T5
    vocab += [("\u2581" + word, math.log(n / total)) for word, n in counts.most_common()]
    vocab += [("\u2581" + word.capitalize(), math.log(n / total) - 1.0) for word, n in counts.most_common()]
    rare = math.log(1 / total) - 5.0  # spelling a word out always costs more than the word
    vocab += [("\u2581", rare)]
    vocab += [(piece, rare) for c in string.ascii_letters + string.digits + string.punctuation
              for piece in (c, "\u2581" + c)]
    unique: dict[str, float] = {}
    for piece, score in vocab:  # the first (most likely) score of a piece listed twice
        unique.setdefault(piece, score)
    return list(unique.items())


def make_clip(tokenizer, width: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        hidden_size=width, intermediate_size=width * 2, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=len(tokenizer), max_position_embeddings=77, projection_dim=width,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))


def make_t5(tokenizer, width: int):
    from transformers import T5Config, T5EncoderModel

    t5 = T5EncoderModel(T5Config(
        d_model=width, d_ff=width * 2, d_kv=width // 4, num_layers=2, num_heads=4, vocab_size=len(tokenizer),
        relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id))
    make_local(t5)
    return t5.eval()


def make_local(t5) -> None:
    """Let each T5 token attend only to tokens at most WINDOW places away (both layers share the bias)."""
    attention = t5.encoder.block[0].layer[0].SelfAttention
    buckets = attention.relative_attention_num_buckets
    bias = attention.relative_attention_bias.weight  # [buckets, heads]
    with torch.no_grad():
        bias.fill_(-30.0)
        half = buckets // 2  # bidirectional: [0, half) look back, [half, buckets) look ahead
        for d in range(WINDOW + 1):  # distances below half // 2 have a bucket each
            bias[d] = 0.0
            bias[half + d] = 0.0


# --------------------------------------------------------------------------- CLIP learns to name things

_HEADS = {"shape": SHAPES, "colour": tuple(COLOURS), "background": tuple(COLOURS), "background2": tuple(COLOURS)}


def _labelled_caption(rng: random.Random) -> tuple[str, dict[str, int]]:
    """A world caption (sometimes with an unknown word in it) and what it names; -1 = not named."""
    scene = random_scene(rng)
    template = rng.choice(TEMPLATES)
    text = with_articles(template.format(colour=scene.colour, shape=scene.shape,
                                         background=scene.background_words))
    if rng.random() < 0.2:  # a trigger word or other extra word must not change what is named
        words = text.split()
        words.insert(rng.randrange(len(words) + 1), rng.choice(COMMON_WORDS))
        text = " ".join(words)
    named_bg = "{background}" in template
    labels = {"shape": SHAPES.index(scene.shape), "colour": list(COLOURS).index(scene.colour),
              "background": list(COLOURS).index(scene.background[0]) if named_bg else -1,
              "background2": list(COLOURS).index(scene.background[1])
              if named_bg and len(scene.background) > 1 else len(COLOURS)}  # "no second colour"
    if not named_bg:
        labels["background2"] = -1
    return text, labels


def teach_clip(clip, tokenizer, steps: int = 300, batch: int = 64, seed: int = 0, log=print) -> float:
    """Train CLIP so that its pooled vector names shape, colour and background; returns the accuracy."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    width = clip.config.hidden_size
    heads = torch.nn.ModuleDict({k: torch.nn.Linear(width, len(v) + (k == "background2"))
                                 for k, v in _HEADS.items()})
    params = list(clip.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    clip.train()
    accuracy = 0.0
    for step in range(steps):
        texts, labels = zip(*(_labelled_caption(rng) for _ in range(batch)))
        # Padded to the longest caption, not to 77: CLIP's causal attention keeps the pooled
        # vector (read at the end-of-text token) blind to the padding after it.
        ids = tokenizer(list(texts), padding="longest", max_length=77, truncation=True,
                        return_tensors="pt").input_ids
        pooled = clip(ids).pooler_output
        loss, right, counted = 0.0, 0, 0
        for name, head in heads.items():
            target = torch.tensor([lab[name] for lab in labels])
            logits = head(pooled)
            loss = loss + torch.nn.functional.cross_entropy(logits, target, ignore_index=-1)
            keep = target >= 0
            right += int((logits.argmax(-1)[keep] == target[keep]).sum())
            counted += int(keep.sum())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        accuracy = right / counted
        if step % 50 == 0 or step == steps - 1:
            log(f"text  step {step:4d}  loss {loss.item():.4f}  named right {accuracy:.3f}")
    clip.eval()
    clip.requires_grad_(False)
    return accuracy
