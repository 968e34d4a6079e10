"""Full-size FLUX LoRA training step on a GPU, per memory tier: s/step, peak memory, MFU.

    python bench/gpu_flux.py [--family flux1|flux1-kontext|flux2-klein|flux2-dev|flux3] [--variant V]
                             [--tiers 24gb,16gb,12gb,8gb] [--resolutions 512,1024] [--steps 10]
                             [--compile] [--json OUT.json] [--peak-tflops 989]
    python bench/gpu_flux.py --tiny --device cpu --steps 2      # CPU smoke test of the code path

Every family of the studio (studio/families) can be measured: `--family` picks it, `--variant` the
published model (default: the one LoRAs are trained on); bench/gpu_families.py gives each family's
config, input shapes and FLOPs. What follows describes FLUX.1, the default.

What it builds: the FLUX.1 transformer architecture (19 double + 38 single blocks, 24 heads x
128 = 3072 wide, in_channels 64, joint_attention_dim 4096, pooled 768, guidance embeddings,
rope axes [16, 56, 56]; ~11.9B parameters) with RANDOM weights, so no download is needed. It is
created on the meta device (no 24-48 GB of CPU RAM, no slow CPU init), then every parameter is
materialised directly on the GPU with random values (std 1/sqrt(fan_in), norms 1, biases 0).
The training step is the engine's own: the LoRA targets come from the FLUX.1 family
(studio.families.flux1.target_modules, lora.targets "diffusers_default", rank 16), the adapters are
added by studio.train.lora.add_transformer_lora, the optimiser by studio.train.optim, and each step
is studio.train.step.flow_matching_loss (timestep sampling, noising, the family's packing and
position ids, guidance 1.0, MSE) on batch 1 of random latents (512² → 1024 image tokens,
1024² → 4096), 512 T5 tokens of width 4096 and a pooled 768 vector. Only the data pipeline (VAE,
text encoders, caches) is left out: the figures are the transformer step that a run repeats.

Tiers follow the studio's own presets (presets/memory/*.yaml): base precision, gradient
checkpointing, block offload and optimiser are read from them.
- bf16: the base stays bf16 (24gb). `--compile` adds `compile_repeated_blocks` (as the engine).
- int8 / nf4: quantised IN PLACE, the way diffusers' bitsandbytes quantiser does it on load:
  `diffusers.quantizers.bitsandbytes.utils.replace_with_bnb_linear` swaps every nn.Linear for
  `bnb.nn.Linear8bitLt` / `bnb.nn.Linear4bit` (from the same `BitsAndBytesConfig(load_in_8bit=True)`
  / `BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
  bnb_4bit_compute_dtype=torch.bfloat16)` the engine uses), then each layer gets a random bf16
  weight that bitsandbytes quantises as it lands on the GPU (`Int8Params` quantises when moved
  from CPU, `Params4bit` on its first move to a device). The model is flagged
  `is_loaded_in_8bit/4bit` as diffusers does, so peft wraps the layers with its bnb LoRA layers.
  This avoids the save → load round trip of a 24 GB random checkpoint.
- 8gb: NF4 plus diffusers group offloading (`enable_group_offload`, block level, one block per
  group). By default WITHOUT CUDA streams: with `use_stream=True` diffusers keeps a pinned CPU
  copy made when offloading is enabled and, on offload, points each parameter back at it, which
  fits frozen weights but not LoRA weights that an optimiser updates; `--offload-stream` tries it.
- adamw8bit (16/12/8 GB presets) is bitsandbytes' `AdamW8bit`; `--optimizer adamw` forces torch's.

FLOPs (documented, analytic; N = image tokens + text tokens, D = 3072, F = 4D = 12288):
  per double block   2·N·(3·D·D + D·D + 2·D·F) = 24·N·D²   (image and text streams: q, k, v, out, MLP)
                   + 4·N²·D                                 (joint attention: QKᵀ and AV, 2·N²·D each)
  per single block   2·N·(3·D·D + D·F + (D+F)·D) = 24·N·D² + 4·N²·D
  plus the embedders (x 64→D on image tokens, context 4096→D on text tokens), the final
  projection D→64, the modulation / timestep / guidance / pooled MLPs (one token each), and the
  LoRA matrices (2·tokens·r·(in+out) per adapted layer).
  forward FLOPs F_fwd = sum of the above; FLOPs per step = 3·F_fwd (the usual convention: backward
  ≈ 2× forward). With a frozen base the weight gradients are skipped (backward ≈ 1× forward) and
  gradient checkpointing recomputes the forward (+1×), so the hardware does ≈ 2–3·F_fwd; MFU here
  is 3·F_fwd / (s/step) / peak, comparable with the published figures. At 1024², F_fwd ≈ 74.6
  TFLOP, 3·F_fwd ≈ 224 TFLOP.
MFU peak: the card's dense bf16 tensor-core peak from a small table (`PEAK_BF16_TFLOPS`, matched
on the device name) or `--peak-tflops`; omitted when unknown (and on CPU).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import studio.models  # noqa: E402,F401  (quietens library log noise before diffusers is imported)

FULL = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
            guidance_embeds=True, axes_dims_rope=[16, 56, 56])
TINY = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
            guidance_embeds=True, axes_dims_rope=[4, 6, 6])
TEXT_TOKENS = {"full": 512, "tiny": 16}

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), matched on torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                    ("H800", 989.0), ("GH200", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0),
                    ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0),
                    ("RTX 6000 Ada", 364.0), ("RTX 5090", 209.5), ("RTX 4090", 165.2), ("RTX 4080", 97.5),
                    ("RTX 3090", 71.0), ("A6000", 154.8)]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- FLOPs


def forward_flops(cfg: dict, image_tokens: int, text_tokens: int, rank: int = 16, n_lora: tuple = (0, 0)) -> float:
    """Analytic forward FLOPs of one FLUX transformer call, batch 1 (formula in the docstring)."""
    D = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    F = 4 * D
    N = image_tokens + text_tokens
    block = 2 * N * (3 * D * D + D * D + 2 * D * F) + 4 * N * N * D  # = 24·N·D² + 4·N²·D
    single = 2 * N * (3 * D * D + D * F + (D + F) * D) + 4 * N * N * D
    mod = 2 * D * 6 * D * 2 * cfg["num_layers"] + 2 * D * 3 * D * cfg["num_single_layers"] + 2 * D * 2 * D
    embed = (2 * image_tokens * cfg["in_channels"] * D + 2 * text_tokens * cfg["joint_attention_dim"] * D
             + 2 * image_tokens * D * cfg["in_channels"]
             + 2 * (256 * D + D * D) * (3 if cfg["guidance_embeds"] else 2)  # time/guidance/pooled MLPs
             + 2 * (cfg["pooled_projection_dim"] - 256) * D)
    # LoRA: per double block 12 adapted layers (6 image side, 6 text side), per single block q, k, v.
    double_lora = 2 * rank * (image_tokens * (4 * 2 * D + 2 * (D + F)) + text_tokens * (4 * 2 * D + 2 * (D + F)))
    single_lora = 2 * rank * N * 3 * 2 * D
    lora = double_lora * cfg["num_layers"] + single_lora * cfg["num_single_layers"] if rank else 0
    return float(block * cfg["num_layers"] + single * cfg["num_single_layers"] + mod + embed + lora)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tf for key, tf in PEAK_BF16_TFLOPS if key in name), None)


# --------------------------------------------------------------------------- the model


def tier_settings(tier: str) -> dict:
    """Base precision, checkpointing, offload and optimiser of a studio memory tier (its preset)."""
    from studio.config import load_preset

    cfg = load_preset(tier, "memory").config
    m = cfg.get("memory", {})
    return {"base_precision": m.get("base_precision", "bf16"),
            "gradient_checkpointing": bool(m.get("gradient_checkpointing", False)),
            "block_offload": bool(m.get("block_offload", False)),
            "optimizer": cfg.get("optimizer", {}).get("name", "adamw")}


def build_model(cfg: dict, device: torch.device, dtype: torch.dtype, quant: str | None, seed: int = 0,
                family=None):
    """The family's transformer with random weights, made on meta and materialised on `device`."""
    from bench.gpu_families import family_of

    model = (family or family_of("flux1")).meta_transformer(cfg)
    bnb = None
    if quant:
        import bitsandbytes as bnb
        from diffusers import BitsAndBytesConfig
        from diffusers.quantizers.bitsandbytes.utils import replace_with_bnb_linear

        qc = (BitsAndBytesConfig(load_in_8bit=True) if quant == "int8" else
              BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16))
        model = replace_with_bnb_linear(model, modules_to_not_convert=[], quantization_config=qc)
        model.config.quantization_config = qc
        if quant == "int8":
            model.is_loaded_in_8bit = True
        else:
            model.is_loaded_in_4bit = True
    gen = torch.Generator(device).manual_seed(seed)

    def rand(shape, fan_in):
        return (torch.randn(shape, generator=gen, device=device, dtype=torch.float32) / math.sqrt(fan_in)).to(dtype)

    for name, module in model.named_modules():
        if bnb is not None and isinstance(module, bnb.nn.Linear8bitLt):
            w = rand((module.out_features, module.in_features), module.in_features).cpu()
            module.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False).to(device)
        elif bnb is not None and isinstance(module, bnb.nn.Linear4bit):
            old = module.weight
            w = rand((module.out_features, module.in_features), module.in_features)
            module.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type=old.quant_type,
                                              compress_statistics=old.compress_statistics,
                                              quant_storage=old.quant_storage, module=module).to(device)
        for pname, p in list(module.named_parameters(recurse=False)):
            if not p.is_meta:
                continue
            if pname == "bias":
                value = torch.zeros(p.shape, device=device, dtype=dtype)
            elif p.dim() == 1:
                value = torch.ones(p.shape, device=device, dtype=dtype)  # norm scales
            else:
                value = rand(p.shape, p.shape[-1])
            setattr(module, pname, torch.nn.Parameter(value, requires_grad=False))
        for bname, b in list(module.named_buffers(recurse=False)):
            if b.is_meta:
                module._buffers[bname] = torch.zeros(b.shape, device=device, dtype=b.dtype)
    model.requires_grad_(False)
    return model


def quantised_layers(model) -> int:
    """Linear layers whose weights are really stored in 8 or 4 bits (int8 / packed uint8)."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    return sum(1 for m in model.modules()
               if (isinstance(m, bnb.nn.Linear4bit) and m.weight.dtype == torch.uint8)
               or (isinstance(m, bnb.nn.Linear8bitLt) and m.weight.dtype == torch.int8))


def run_config(tier: str, args):
    """The studio's resolved config for a tier (its memory preset) and the family's own settings,
    with the bench's LoRA rank."""
    from studio.config import resolve

    user = {"lora": {"rank": args.rank, "alpha": args.rank, "targets": "diffusers_default"},
            "optimizer": {"lr": 1e-4}, "model": {"family": args.family}}
    if args.optimizer != "tier":
        user["optimizer"]["name"] = args.optimizer
    return resolve(user, tier=tier)


def add_lora(cfg, model, family):
    """The engine's adapters on the engine's targets; returns (LoRA parameters, number of adapted layers)."""
    from studio.train.lora import add_transformer_lora

    targets = add_transformer_lora(cfg, family, model)
    return [p for p in model.parameters() if p.requires_grad], len(targets)


def make_optimizer(cfg, model, device: torch.device, family):
    """The engine's parameter groups and optimiser (fused AdamW on a GPU, as the presets set it)."""
    from studio.train.optim import build_optimizer, param_groups

    if device.type == "cuda":
        cfg.optimizer.fused = True
    return build_optimizer(cfg, param_groups(cfg, model, None, family.block_of))


def engine_step(run_cfg, model, family, latents, text, reference, guidance, generator, device, dtype):
    """The engine's loss (studio.train.step.flow_matching_loss) for one batch."""
    from studio.train.step import flow_matching_loss

    return flow_matching_loss(model, family, run_cfg, latents, text, guidance, generator, device, dtype,
                              reference=reference)


# --------------------------------------------------------------------------- one tier


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_tier(tier: str, args, device: torch.device) -> list[dict]:
    from bench import gpu_families

    family = gpu_families.family_of(args.family)
    variant = args.variant or gpu_families.default_variant(family)
    cfg = gpu_families.transformer_config(family, variant, args.tiny)
    settings = tier_settings(tier)
    gpu = device.type == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    quant = settings["base_precision"] if settings["base_precision"] in ("int8", "nf4") else None
    notes = []
    if quant == "fp8":
        quant = None
    if not gpu:
        notes.append("CPU: bitsandbytes' CPU kernels, fp32 compute (a smoke test of the code path, not a figure)")
    run_cfg = run_config(tier, args)
    optimizer_name = run_cfg.optimizer.name
    offload = settings["block_offload"]
    for note in notes:
        log(f"[{tier}] {note}")

    t0 = time.perf_counter()
    model = build_model(cfg, device, dtype, quant, seed=args.seed, family=family)
    params, n_targets = add_lora(run_cfg, model, family)
    n_quantised = quantised_layers(model)
    if settings["gradient_checkpointing"]:
        model.enable_gradient_checkpointing()
    if offload:
        onload = device
        model.enable_group_offload(onload, torch.device("cpu"), offload_type="block_level",
                                   num_blocks_per_group=1, use_stream=args.offload_stream and gpu)
    if args.compile and gpu:
        model.compile_repeated_blocks(fullgraph=False)
    optimizer = make_optimizer(run_cfg, model, device, family)
    build_s = time.perf_counter() - t0
    log(f"[{tier}] built in {build_s:.1f}s: base {quant or str(dtype).replace('torch.', '')}, "
        f"{n_quantised} quantised linear layers, {n_targets} LoRA layers, checkpointing {settings['gradient_checkpointing']}, offload {offload}, "
        f"optimizer {optimizer_name}")

    peak_tf = peak_tflops(device, args.peak_tflops)
    text_tokens = args.text_tokens or TEXT_TOKENS["tiny" if args.tiny else "full"]
    results = []
    model.train()
    for res in args.resolutions:
        record = {"tier": tier, "resolution": res, "device": device_name(device),
                  "date": _dt.date.today().isoformat(), "base": quant or str(dtype).replace("torch.", ""),
                  "gradient_checkpointing": settings["gradient_checkpointing"], "block_offload": offload,
                  "optimizer": optimizer_name, "compile": bool(args.compile and gpu), "lora_rank": args.rank,
                  "model": f"{family.name}-{variant}-{'tiny' if args.tiny else 'full'}", "notes": notes,
                  "quantised_linear_layers": n_quantised, "lora_layers": n_targets}
        latents, text, reference = gpu_families.make_inputs(family, cfg, res, text_tokens, device, args.seed)
        image_tokens = gpu_families.image_tokens(family, res) * (2 if reference is not None else 1)
        fwd = gpu_families.forward_flops(family, cfg, model, image_tokens, text_tokens, args.rank)
        record.update(image_tokens=image_tokens, text_tokens=text_tokens, forward_tflop=fwd / 1e12,
                      step_tflop=3 * fwd / 1e12)
        generator = torch.Generator(device).manual_seed(args.seed)
        guidance = 1.0 if cfg.get("guidance_embeds") else None
        try:
            if gpu:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            times, losses = [], []
            for i in range(args.warmup + args.steps):
                sync(device)
                start = time.perf_counter()
                loss = engine_step(run_cfg, model, family, latents, text, reference, guidance, generator, device,
                                   dtype)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                sync(device)
                if i >= args.warmup:
                    times.append(time.perf_counter() - start)
                    losses.append(float(loss.detach()))
        except torch.OutOfMemoryError as exc:
            record.update(error=f"out of memory: {str(exc).splitlines()[0]}")
            log(f"{tier} {res}px: OUT OF MEMORY")
            results.append(record)
            optimizer.zero_grad(set_to_none=True)  # free what the failed step left for the next resolution
            loss = None
            del latents, text, reference
            gc.collect()
            torch.cuda.empty_cache()
            continue
        s = sorted(times)[len(times) // 2]  # median
        record.update(s_per_step=s, s_per_step_mean=sum(times) / len(times), steps=len(times),
                      loss_finite=all(math.isfinite(v) for v in losses),
                      peak_gpu_memory_gb=torch.cuda.max_memory_allocated(device) / 2**30 if gpu else None,
                      achieved_tflops=3 * fwd / s / 1e12, peak_bf16_tflops=peak_tf,
                      mfu=(3 * fwd / s / 1e12) / peak_tf if peak_tf else None)
        mem = f"peak {record['peak_gpu_memory_gb']:.2f} GB" if gpu else "peak GPU memory n/a (CPU)"
        mfu = f"MFU {record['mfu'] * 100:.1f}%" if record["mfu"] is not None else "MFU n/a"
        print(f"{tier} {res}px: {s:.3f} s/step, {mem}, {record['achieved_tflops']:.3g} TFLOP/s "
              f"({record['step_tflop']:.3g} TFLOP/step), {mfu}", flush=True)
        results.append(record)
        del latents, text, reference
    del model, optimizer, params
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()
    return results


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="flux1", help="the model family (python -m studio families)")
    p.add_argument("--variant", default="", help="its variant (default: the one LoRAs are trained on)")
    p.add_argument("--tiers", default="24gb,16gb,12gb,8gb")
    p.add_argument("--resolutions", default=None, help="default 512,1024 (tiny: 64,128)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per resolution (median reported)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; tiny 1)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--text-tokens", type=int, default=None, help="T5 tokens (default 512; tiny 16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the repeated blocks (GPU)")
    p.add_argument("--optimizer", choices=["tier", "adamw", "adamw8bit"], default="tier")
    p.add_argument("--offload-stream", action="store_true", help="8gb tier: group offload with CUDA streams")
    p.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak, for MFU")
    p.add_argument("--tiny", action="store_true", help="a tiny FLUX-shaped config (smoke test)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", nargs="?", const="-", default=None, help="write results as JSON (to a file or -)")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/gpu_flux.py needs a CUDA GPU and none is available (torch.cuda.is_available() is "
              "False). For a CPU smoke test of the code path run: bench/gpu_flux.py --tiny --device cpu",
              file=sys.stderr)
        return 2
    if device.type != "cuda" and not args.tiny:
        print("The full-size model only runs on CUDA; add --tiny for a CPU smoke test.", file=sys.stderr)
        return 2
    default_res = "64,128" if args.tiny else "512,1024"
    args.resolutions = [int(r) for r in (args.resolutions or default_res).split(",")]
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    results = []
    for tier in [t.strip() for t in args.tiers.split(",") if t.strip()]:
        results += bench_tier(tier, args, device)
    if args.json:
        text = json.dumps({"benchmark": "gpu_flux", "results": results}, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
