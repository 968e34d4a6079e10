"""Flux LoRA Studio: train FLUX.1 LoRAs from a folder of photos."""

__version__ = "0.1.0"
