"""Offline random-weight FLUX.3 modular pipelines for tests and benchmarks (nothing is downloaded).

The text model is a Qwen3-VL with 32 narrow text layers (the pipeline stacks hidden states 4, 8, …,
32, so the transformer's text width is eight times the text model's) and a one-layer vision tower
it never uses; its processor wraps the tiny Qwen tokenizer of the FLUX.2 [klein] models. The VAE is
FLUX.2's, built as flux2_tiny builds it (non-trivial batch-norm statistics).
"""

from __future__ import annotations

from pathlib import Path

from .flux2_tiny import QWEN3_CHAT_TEMPLATE, SIZES, _save, _vae, qwen_tokenizer

TEXT_LAYERS = 32


def qwen3_vl_processor():
    """A Qwen3VLProcessor (what Qwen3-VL checkpoints ship as their tokenizer), built offline."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    return Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=qwen_tokenizer(),
                            video_processor=Qwen3VLVideoProcessor(), chat_template=QWEN3_CHAT_TEMPLATE)


def build(out_dir: str | Path, size: str = "tiny", distilled: bool = False, seed: int = 0, readme: str = "") -> Path:
    """Write a Flux3ModularPipeline (a Flux3DistilledModularPipeline with `distilled`) with random weights."""
    import diffusers
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from ..models import quiet_loading

    quiet_loading()
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    s = SIZES[size]
    processor = qwen3_vl_processor()
    tok = processor.tokenizer
    torch.manual_seed(seed)
    transformer = diffusers.Flux3Transformer2DModel(
        in_channels=s["latent"] * 4, cond_in_channels=s["latent"] * 4, num_layers=s["double"],
        num_single_layers=s["single"], attention_head_dim=s["head_dim"], num_attention_heads=s["heads"],
        joint_attention_dim=TEXT_LAYERS // 4 * s["text_hidden"], axes_dims_rope=s["rope"], flow_map=distilled)
    head = 16
    text = Qwen3VLForConditionalGeneration(Qwen3VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=s["text_hidden"], intermediate_size=s["text_hidden"] * 2,
                         num_hidden_layers=TEXT_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=head,
                         max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
                         rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=8,
                           out_hidden_size=s["text_hidden"], spatial_merge_size=1, temporal_patch_size=1,
                           deepstack_visual_indexes=[0]),
        tie_word_embeddings=True))
    blocks = getattr(diffusers, "Flux3DistilledAutoBlocks" if distilled else "Flux3AutoBlocks")()
    pipe = blocks.init_pipeline()
    pipe.update_components(transformer=transformer, vae=_vae(s, seed), text_encoder=text, tokenizer=processor)
    # the index records each component's folder; a moved or downloaded copy loads from its own folders
    return _save(pipe, out_dir, readme, overwrite_modular_index=True)
