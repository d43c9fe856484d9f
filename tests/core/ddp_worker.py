"""Run by ``test_distributed.py`` under ``torchrun --nproc_per_node 2``: trains each method for
a few steps in one process group and writes, per rank, the final weights and what it saw.

    python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_worker.py OUT
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from propl.data.benchmark import ArraySet
from propl.data.synthetic import SYNTHETIC_TASKS, make_arrays
from propl.models import build_model
from propl.train.distributed import process_group
from propl.train.methods import MethodOptions
from propl.train.trainer import TrainConfig, Trainer

SIZE = 64
STEPS = 3
CASES = {  # name: (method, extra TrainConfig fields)
    "supervised": ("supervised", {}),
    "propl": ("propl", {}),
    "propl-ema": ("propl", {"options": MethodOptions(teacher="ema")}),
    "mean-teacher": ("mean-teacher", {}),
    "unimatch": ("unimatch", {}),
    "propl-cached": ("propl", {"freeze_encoder": True, "cache_features": True}),
    "supervised-anchored": ("supervised", {"anchor": 1.0}),
    "stop": ("supervised", {}),
    "resume": ("supervised", {}),  # continues the "stop" run from its last/
}


def arrays(n: int, seed: int) -> ArraySet:
    return make_arrays(n, SIZE, seed)


def main(out: Path) -> None:
    lab, unlab, val = arrays(8, 0), arrays(8, 1), arrays(4, 2)
    with process_group("cpu") as (ranks, _):
        for name, (method, extra) in CASES.items():
            torch.manual_seed(100 + ranks.rank)  # different on each rank: DDP starts from rank 0's
            model = build_model("propl-small", tasks=SYNTHETIC_TASKS, input_size=SIZE)
            start = {k: v.detach().clone().contiguous() for k, v in model.named_parameters()}
            cfg = TrainConfig(method=method, steps=STEPS, batch_size=2, unlabelled_batch_size=2,
                              lr=3e-3, eval_every=2, device="cpu", **extra)  # fmt: skip
            run_dir = out / ("stop" if name == "resume" else name)
            trainer = Trainer(model, cfg, lab, unlab, val, run_dir)
            steps_asked = []

            def stop(name=name, asked=steps_asked) -> bool:  # only rank 1 asks to stop
                asked.append(1)
                return name == "stop" and ranks.rank == 1 and len(asked) > 1

            events = list(trainer.run(should_stop=stop, resume=name == "resume"))
            params = {k: v.detach().cpu().contiguous() for k, v in model.named_parameters()}
            save_file(params, str(out / f"{name}.rank{ranks.rank}.safetensors"))
            if ranks.main:
                save_file(start, str(out / f"{name}.start.safetensors"))
            seen = {
                "kinds": [e.kind for e in events],
                "losses": [e.data["loss"] for e in events if e.kind == "step"],
                "last_step": events[-1].step,
            }
            (out / f"{name}.rank{ranks.rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
