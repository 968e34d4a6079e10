"""Run `python -m studio train ...` under torchrun, recording what each rank did.

Used by tests/test_distributed.py:

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_helper.py CONFIG --run-dir DIR --tier cpu

The arguments are exactly those of `python -m studio train`; the real command-line path
(`studio.__main__.main`) runs unchanged. The helper only wraps three engine functions (building
the state, the loss and the finish in studio.train.loop), so that
each rank also writes, into the run folder:

- `rank{N}.json`: the distributed type, world size, process index, the sample ids this
  rank trained on at every optimiser step (read from the engine's own BatchPlan) and the
  rank's local loss of every micro-batch;
- `rank{N}.safetensors`: this rank's final LoRA state (peft's `get_peft_model_state_dict`
  of the unwrapped model), written after the last step and before the main process saves
  the LoRA files, so the ranks can be compared tensor by tensor.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from studio.train import loop  # noqa: E402

_build_state, _finish, _loss = loop.build_state, loop.finish, loop.loss
RECORD: dict = {}


def build_state(*args, **kwargs):
    self = _build_state(*args, **kwargs)
    acc = self.accelerator
    accum = self.cfg.training.gradient_accumulation
    steps = [[i for micro in range(accum) for i in self.plan[step * accum + micro]]
             for step in range(self.cfg.schedule.max_steps)]
    record = {"distributed_type": str(acc.distributed_type), "num_processes": acc.num_processes,
              "process_index": acc.process_index, "is_main_process": acc.is_main_process,
              "backend": getattr(acc.state, "backend", None), "steps": steps,
              "model_class": type(self.model).__name__, "losses": []}
    RECORD.update(record)
    (self.run_dir / f"rank{acc.process_index}.json").write_text(json.dumps(record))
    return self


def loss(self, ids):
    value = _loss(self, ids)
    RECORD["losses"].append(float(value.detach()))  # a host sync: fine in a test
    return value


def finish(self):
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    acc = self.accelerator
    (self.run_dir / f"rank{acc.process_index}.json").write_text(json.dumps(RECORD))
    state = get_peft_model_state_dict(acc.unwrap_model(self.model))
    save_file({k: v.detach().float().contiguous().cpu() for k, v in state.items()},
              str(self.run_dir / f"rank{acc.process_index}.safetensors"))
    return _finish(self)


loop.build_state, loop.finish, loop.loss = build_state, finish, loss

if __name__ == "__main__":
    from studio.__main__ import main

    sys.exit(main(["train", *sys.argv[1:]]))
