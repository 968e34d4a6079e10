"""What the training plan (studio/plan.py) needs to know of one model: sizes, tokens, memory per tier.

A family answers `family.plan_facts(variant)` with a `PlanFacts`; the plan computes everything
else (FLOPs per step, memory at a resolution, disk use) from these facts alone, the same way for
every family. The sizes are counted from the full-size architecture on the meta device
(tests/test_plan.py recounts them); the memory per tier is either the peak the field publishes
(FLUX.1) or estimated from the weights and FLUX.1's published overhead, and says which.

No torch import: the UI reads this at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.text_encoders import GIB, cpu_encoding_seconds, encoders_fit

# The weights' precision in each memory tier (presets/memory/*.yaml); the 8gb tier streams NF4 blocks.
TIER_PRECISION = {"24gb": "bf16", "16gb": "int8", "12gb": "nf4", "8gb": "nf4"}
GROWTH_TOKENS = 1536  # the peak's growth is given per this many image tokens beyond 512 px
CUDA_CONTEXT_GIB = 1.0  # the CUDA context (and the VAE after the captions), on the GPU while captions are cached


@dataclass(frozen=True)
class TierMemory:
    """Peak training memory in one tier: at 512 px (1,024 image tokens) with batch size 1, and
    how much it grows with more image tokens."""

    peak_gib: float
    growth_gib: float          # per GROWTH_TOKENS more image tokens
    slowdown: float            # step time relative to an unquantised base (offloaded blocks are slower)
    source: str                # where the figure comes from, in words
    kind: str = "published"    # published | estimated


@dataclass(frozen=True)
class PlanFacts:
    """One variant's facts for the plan."""

    family: str
    variant: str
    title: str
    parameters: float                  # the transformer's parameters
    attention_width: int               # heads × head dim
    blocks: int                        # double + single blocks (attention FLOPs)
    text_tokens: int                   # the text sequence the transformer attends to
    text_width: int                    # width of a cached text embedding per token
    latent_channels: int               # of the VAE (8× smaller per side); the cache keeps mean and log-variance
    lora_width: dict[str, int]         # target set → sum of in + out features of its layers (× rank = LoRA size)
    weight_gib: dict[str, float]       # the transformer's weights per precision
    text_encoder_gib: float            # the text encoders in bf16, on the GPU while captions are cached if they fit
    tiers: tuple                       # ((tier, smallest GPU GiB), …), largest first: the family's own table
    min_gpu_gib: float                 # the 8gb tier's smallest GPU
    tier_memory: dict[str, TierMemory] = field(default_factory=dict)
    pixels_per_token: int = 16         # side of one image token: the VAE's 8× and 2×2 patches
    trains_from_pairs: bool = False    # an edit model: the reference image's tokens ride along
    edit_only: bool = False            # trains from pairs only (a dataset without pairs cannot train it)
    train_on: bool = True              # the plan may propose it (Variant.train_on)

    def image_tokens(self, resolution: int) -> int:
        return (resolution // self.pixels_per_token) ** 2

    def step_flops(self, resolution: int, batch: int = 1, pairs: bool = False, checkpointing: bool = True) -> float:
        """Training FLOPs of one LoRA step: forward, the backward's input gradients (as much again;
        frozen weights need no weight gradients) and, with checkpointing, a second forward. An
        edit step carries the reference image's tokens too."""
        tokens = self.image_tokens(resolution) * (2 if pairs else 1) + self.text_tokens
        forward = 2 * self.parameters * tokens + 4 * tokens ** 2 * self.attention_width * self.blocks
        return forward * (3 if checkpointing else 2) * batch

    def resident_gib(self, tier: str) -> float:
        """The transformer's weights on the GPU while captions are encoded: bitsandbytes places a
        quantised base there as it loads; an unquantised one moves there after the captions."""
        precision = TIER_PRECISION[tier]
        return 0.0 if precision == "bf16" else self.weight_gib[precision]

    def captions_on_gpu(self, tier: str, gpu_gib: float | None) -> bool:
        """Whether the engine encodes captions on this card's GPU in this tier: its rule
        (studio/core/text_encoders.py) on what is free then, the card less the CUDA context and
        the resident weights; otherwise they are encoded on the CPU."""
        if gpu_gib is None:
            return False
        free = gpu_gib - CUDA_CONTEXT_GIB - self.resident_gib(tier)
        return encoders_fit(self.text_encoder_gib * GIB, free * GIB)

    def caching_peak_gib(self, tier: str, on_gpu: bool = True) -> float:
        """The GPU's peak while captions are encoded: the CUDA context, the resident weights and,
        when they run there, the text encoders in bf16."""
        return round(CUDA_CONTEXT_GIB + self.resident_gib(tier) + (self.text_encoder_gib if on_gpu else 0.0), 1)

    def cpu_caption_seconds(self, captions: int) -> float:
        """Estimated seconds to encode `captions` captions on the CPU: the encoders' parameters (their
        bf16 size / 2 bytes) × the text tokens, at an assumed CPU throughput."""
        return cpu_encoding_seconds(self.text_encoder_gib * GIB / 2, self.text_tokens, captions)

    def download_gib(self) -> float:
        """The base model's download: the transformer and the text encoders in bf16, and the VAE."""
        return self.weight_gib["bf16"] + self.text_encoder_gib + 0.2

    def offered_tiers(self) -> list[tuple[str, float]]:
        """(tier, smallest GPU GiB) of every tier this variant trains in: its table, then the 8gb tier
        when the variant trains below its table's smallest tier."""
        tiers = [(tier, need) for tier, need in self.tiers]
        if not tiers or self.min_gpu_gib < tiers[-1][1]:
            tiers.append(("8gb", self.min_gpu_gib))
        return tiers


def scaled_tier_memory(reference: PlanFacts, weight_gib: dict[str, float], attention_width: int,
                       blocks: int) -> dict[str, TierMemory]:
    """Peak memory per tier of a model without published figures: its own weights in the tier's
    precision, plus the reference's published overhead (peak less its weights: LoRA, optimiser,
    activations), scaled by attention width × blocks, which the activations grow with."""
    scale = attention_width * blocks / (reference.attention_width * reference.blocks)
    out = {}
    for tier, ref in reference.tier_memory.items():
        precision = TIER_PRECISION[tier]
        overhead = max(0.0, ref.peak_gib - reference.weight_gib[precision])
        out[tier] = TierMemory(
            round(weight_gib[precision] + overhead * scale, 1), round(ref.growth_gib * scale, 2), ref.slowdown,
            f"estimated: the {precision} weights ({weight_gib[precision]:g} GiB, counted on the meta device) plus "
            f"{reference.title}'s published overhead in this tier scaled by width × blocks ({scale:.2f}×)",
            "estimated")
    return out


class FamilySizes:
    """The part of the Family interface (base.py) that answers how big a variant is, which memory
    tier a card gets, and the plan's facts; the attributes it reads are declared on Family."""

    def trains_from_pairs(self) -> bool:
        """Whether the family trains edit LoRAs from before/after pairs (what the plan asks of it):
        an edit model, or one whose pipeline takes reference images (see `run_mode`)."""
        return self.kind == "edit" or self.reference_images

    def variant_lora_width(self, variant: str = "") -> dict[str, int]:
        return dict(self.lora_width)

    def variant_text_encoder_gib(self, variant: str = "") -> float:
        return self.text_encoder_gib

    def tier_memory(self, variant: str = "") -> dict:
        """{tier: TierMemory}: the peak training memory per tier at 512 px, and where it comes from."""
        raise NotImplementedError

    def plan_facts(self, variant: str):
        """The variant's sizes, tokens and memory per tier for the training plan (a PlanFacts)."""
        config = self.full_config(variant)
        return PlanFacts(
            family=self.name, variant=variant, title=self.variants[variant].title,
            parameters=self.variants[variant].parameters_b * 1e9, attention_width=self.inner_dim(config),
            blocks=config["num_layers"] + config["num_single_layers"], text_tokens=self.token_limit(variant),
            text_width=config["joint_attention_dim"], latent_channels=self.latent_channels,
            lora_width=self.variant_lora_width(variant), weight_gib=self.variant_weight_gib(variant),
            text_encoder_gib=self.variant_text_encoder_gib(variant), tiers=self.variant_tiers(variant),
            min_gpu_gib=self.variant_min_gpu_gib(variant), tier_memory=self.tier_memory(variant),
            trains_from_pairs=self.trains_from_pairs(), edit_only=self.kind == "edit",
            train_on=self.variants[variant].train_on)

    # -- sizes and memory (a family whose variants differ in size overrides these)
    def variant_weight_gib(self, variant: str = "") -> dict[str, float]:
        """The transformer's weights in GiB per precision, for one variant."""
        return dict(self.weight_gib)

    def variant_tiers(self, variant: str = "") -> tuple:
        """((tier, smallest GPU GiB), …), largest first, for one variant."""
        return tuple(self.tier_min_gib)

    def variant_min_gpu_gib(self, variant: str = "") -> float:
        """The smallest GPU (GiB) the variant trains on at all, in the lowest tier (8gb: block offload)."""
        return self.min_gpu_gib

    def tier_for(self, gib: float | None, variant: str = "") -> str | None:
        """The memory tier a GPU of `gib` GiB gets for this variant: the first of its table it
        reaches, else the 8gb tier when it reaches the variant's minimum; 'cpu' without a GPU;
        None when the GPU is too small to train this variant at all."""
        if gib is None:
            return "cpu"
        for tier, need in self.variant_tiers(variant):
            if gib >= need:
                return tier
        return "8gb" if gib >= self.variant_min_gpu_gib(variant) else None
