"""`python -m studio families`: every registered family with its variants, sizes, licences in
plain words, weight memory per precision and memory-tier table, as text or as JSON. Read from the
registry only, so a family module that registers itself is listed without a change here."""

from __future__ import annotations

import json

from .base import families
from .choice import describe


def families_json() -> str:
    return json.dumps([describe(f) for f in families()], indent=2, ensure_ascii=False)


def _tiers(v: dict) -> str:
    steps = [f"{t['tier']} from {t['min_gib']:g} GiB" for t in v["tiers"]]
    floor = f"8gb (block offload) from {v['min_gpu_gib']:g} GiB" if v["min_gpu_gib"] else "8gb (block offload) below"
    return ", ".join(steps + [floor])


def families_text() -> str:
    lines = []
    for family in families():
        d = describe(family)
        lines.append(f"{d['name']}  ({d['kind']}, {d['pipeline']})")
        for name, v in d["variants"].items():
            size = f"{v['parameters_b']:g} B parameters" if v["parameters_b"] else "size not stated"
            memory = ", ".join(f"{p} {g:g} GiB" for p, g in v["weight_gib"].items()) or "not stated"
            lines += [f"  {v['alias']:22s} {v['title']} — {v['description']}",
                      f"  {'':22s} model.base: {v['hub_id']}; transformer {size}",
                      f"  {'':22s} licence: {v['licence']}",
                      f"  {'':22s} weights: {memory}",
                      f"  {'':22s} memory tiers: {_tiers(v)}"]
        if d["config_overrides"]:
            lines.append(f"  {'':22s} settings this family changes: {json.dumps(d['config_overrides'])}")
        lines.append("")
    lines.append("Set model.family to a name above (or auto: detected from the model's files).")
    return "\n".join(lines)
