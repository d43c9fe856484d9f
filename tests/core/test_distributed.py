"""Data-parallel training under torchrun (two CPU processes, Gloo): every rank ends with the
same weights although each trained on its own batches; only rank 0 writes; a stop asked on
one rank stops all; the CLI runs under torchrun and refuses what it cannot do there."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_worker import CASES, STEPS  # tests/core is on sys.path (pytest's rootdir import)
from safetensors.torch import load_file

from propl.cli import main
from propl.data.synthetic import write_benchmark_folder
from propl.train.distributed import Ranks, rank_device, rank_seed, ranks_from_env

HERE = Path(__file__).parent
TINY = ["--size", "64", "--arch", "propl-small", "--device", "cpu"]


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ARGS`` with this interpreter."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def worker_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun(str(HERE / "ddp_worker.py"), str(out), cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def weights(out: Path, name: str, who: str) -> dict[str, torch.Tensor]:
    return load_file(str(out / f"{name}.{who}.safetensors"))


def seen(out: Path, name: str, rank: int) -> dict:
    return json.loads((out / f"{name}.rank{rank}.json").read_text())


@pytest.mark.parametrize("name", [n for n in CASES if n not in ("stop", "resume")])
def test_ranks_train_on_their_own_batches_and_end_with_the_same_weights(worker_out, name):
    rank0, rank1 = weights(worker_out, name, "rank0"), weights(worker_out, name, "rank1")
    start = weights(worker_out, name, "start")
    assert rank0.keys() == rank1.keys() == start.keys()
    for key in rank0:  # averaged gradients: the very same update on both ranks
        assert torch.equal(rank0[key], rank1[key]), key
    moved = [k for k in rank0 if not torch.equal(rank0[k], start[k])]
    assert moved, "training did not change the weights"
    # each rank drew its own batches (and both started from rank 0's weights, although
    # rank 1 built its model from another seed)
    losses0, losses1 = seen(worker_out, name, 0)["losses"], seen(worker_out, name, 1)["losses"]
    assert len(losses0) == len(losses1) == STEPS
    assert losses0 != losses1


def test_only_rank_0_writes_the_log_and_checkpoints(worker_out):
    log = [
        json.loads(line) for line in (worker_out / "propl" / "log.jsonl").read_text().splitlines()
    ]
    kinds = [e["kind"] for e in log]
    assert kinds.count("start") == 1 and kinds.count("done") == 1  # not one per rank
    assert log[0]["data"]["ranks"] == 2
    assert (worker_out / "propl" / "best" / "model.safetensors").is_file()
    best = load_file(str(worker_out / "propl" / "best" / "model.safetensors"))
    assert best  # a readable checkpoint, written once


def test_a_stop_on_one_rank_stops_every_rank_at_the_same_step(worker_out):
    # only rank 1's stop flag is raised (before its second step); rank 0 must stop with it,
    # or it would wait forever for rank 1's gradients
    for rank in (0, 1):
        s = seen(worker_out, "stop", rank)
        assert s["kinds"][-1] == "stopped" and s["last_step"] == 1, (rank, s)
    assert (worker_out / "stop" / "last" / "train_state.json").is_file()


def test_a_stopped_run_resumes_on_every_rank(worker_out):
    for rank in (0, 1):
        s = seen(worker_out, "resume", rank)
        assert s["kinds"][0] == "start" and s["kinds"][-1] == "done", (rank, s)
        assert s["last_step"] == STEPS and len(s["losses"]) == STEPS - 1  # from step 1 on
    assert seen(worker_out, "resume", 0)["losses"] != seen(worker_out, "resume", 1)["losses"]
    rank0, rank1 = weights(worker_out, "resume", "rank0"), weights(worker_out, "resume", "rank1")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)


def test_propl_train_under_torchrun(tmp_path):
    folder = write_benchmark_folder(tmp_path / "syn", n_train=12, n_test=3)
    args = ["-m", "propl", "train", "--data", str(folder), "--method", "propl", "--labelled",
            "1/4", "--steps", "4", "--eval-every", "2", "--batch-size", "2", "--out", "run",
            "--cache", "cache", "--json", *TINY]  # fmt: skip
    done = torchrun(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    kinds = [e["kind"] for e in events]
    assert kinds.count("start") == 1 and kinds[-1] == "done"  # rank 0 alone prints
    assert events[0]["data"]["ranks"] == 2 and kinds.count("step") == 4
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert len(list((tmp_path / "cache").glob("*.npz"))) >= 1  # rank 0 filled it, rank 1 read


def test_project_retraining_refuses_torchrun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["train", "--project", str(tmp_path / "p.zarr")]) == 2
    assert "without torchrun" in capsys.readouterr().err


def test_ranks_from_the_environment():
    assert ranks_from_env({}) == Ranks(0, 1, 0)
    assert ranks_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Ranks(3, 4, 1)
    for bad in ({"WORLD_SIZE": "two"}, {"WORLD_SIZE": "2", "RANK": "2"}):
        with pytest.raises(ValueError):
            ranks_from_env(bad)
    assert rank_seed(7, 0) == 7 and len({rank_seed(7, r) for r in range(4)}) == 4
    assert rank_device("cpu", Ranks(1, 2, 1)) == torch.device("cpu")
    if torch.cuda.device_count() < 2:
        with pytest.raises(ValueError, match="CUDA|GPU"):
            rank_device("cuda", Ranks(1, 2, 1))  # no CUDA here, or fewer GPUs than ranks
    else:
        assert rank_device("cuda", Ranks(1, 2, 1)) == torch.device("cuda", 1)


@pytest.mark.parametrize(
    "tasks", [("bright_blob",), ("bright_blob", "dark_blob")], ids=["new", "new+known"]
)
def test_a_new_task_trains_under_torchrun(tmp_path, tasks):
    """``--init`` meets a task it does not know: the new-task recipe gives it decoders of its
    own; under torchrun every parameter that trains must get a gradient on every rank, also
    when a batch holds no scan of the new task (the known task trains beside it)."""
    folder = write_benchmark_folder(tmp_path / "syn", n_train=12, n_test=3)
    common = ["--data", str(folder), "--steps", "2", "--eval-every", "2", "--batch-size", "2",
              "--cache", str(tmp_path / "cache"), "--json"]  # fmt: skip
    known = tmp_path / "known"
    assert main(["train", *common, "--tasks", "dark_blob", "--method", "supervised",
                 "--out", str(known), *TINY]) == 0  # fmt: skip
    done = torchrun("-m", "propl", "train", *common, "--tasks", *tasks, "--labelled", "1/4",
                    "--device", "cpu", "--init", str(known / "best"), "--out", "run",
                    cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "recipe 'new-task'" in done.stderr
    config = json.loads((tmp_path / "run" / "best" / "model.json").read_text())
    assert "bright_blob" in json.dumps(config)  # the new task is in the checkpoint
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [e["kind"] for e in events].count("step") == 2
