"""A task learnt after the model was trained gets decoders of its own: the other tasks' outputs
stay bit-identical however far they move, mixed batches route each scan to its task's pair,
and the pair survives a checkpoint round trip."""

import pytest
import torch

from propl.checkpoint import load_checkpoint, save_checkpoint
from propl.models import build_model
from propl.models.propl import ProPLConfig

TASKS = ("a", "b")


@pytest.fixture
def model():
    torch.manual_seed(0)
    net = build_model("propl", tasks=TASKS, input_size=64, pretrained=False)
    net.add_tasks(("new",)).give_own_decoders(("new",))
    return net.eval()


def _scramble(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))


def test_moving_a_new_tasks_decoders_leaves_the_other_tasks_bit_identical(model):
    x = torch.rand(3, 1, 64, 64)
    known = torch.tensor([0, 1, 0])
    before = model(x, known)
    new_before = model(x, torch.tensor([2, 2, 2]))["d2"]
    _scramble(model.task_decoders[0])
    after = model(x, known)
    assert torch.equal(before["d1"], after["d1"]) and torch.equal(before["d2"], after["d2"])
    assert not torch.allclose(new_before, model(x, torch.tensor([2, 2, 2]))["d2"])


def test_a_fresh_pair_starts_as_the_shared_one(model):
    x = torch.rand(2, 1, 64, 64)
    shared = model.decode(model.encode(x), torch.tensor([2, 2]), 2)
    model.config = ProPLConfig(**{**model.config.to_dict(), "own_decoders": ()})
    assert torch.equal(shared, model.decode(model.encode(x), torch.tensor([2, 2]), 2))


@pytest.mark.parametrize("decoder", [1, 2])
def test_a_mixed_batch_equals_each_scan_alone(model, decoder):
    _scramble(model.task_decoders[0])
    x = torch.rand(4, 1, 64, 64)
    tasks = torch.tensor([2, 0, 2, 1])
    feats = model.encode(x)
    mixed = model.decode(feats, tasks, decoder)
    for i in range(4):
        alone = model.decode([f[i : i + 1] for f in feats], tasks[i : i + 1], decoder)
        assert torch.allclose(mixed[i : i + 1], alone, rtol=1e-4, atol=1e-4)


def test_mc_samples_of_a_mixed_batch_use_each_scans_decoder(model):
    _scramble(model.task_decoders[0])
    x = torch.rand(3, 1, 64, 64)
    tasks = torch.tensor([0, 2, 1])
    feats = model.encode(x)
    model.decoder1.dropout = model.task_decoders[0].first.dropout = 0.0  # deterministic
    mc = model.mc_decoder1(feats, tasks, samples=3)
    plain = torch.sigmoid(model.decode(feats, tasks, 1))
    for t in range(3):
        assert torch.allclose(mc[t], plain, atol=1e-5)


def test_own_parameters_are_the_pairs_only(model):
    names = [n for n, _ in model.own_parameters(("new",))]
    assert names and all(n.startswith("task_decoders.0.") for n in names)
    assert model.own_parameters(("a",)) == []


def test_own_decoders_survive_a_checkpoint_round_trip(model, tmp_path):
    _scramble(model.task_decoders[0])
    save_checkpoint(model, tmp_path / "m", dtype=torch.float32)
    loaded = load_checkpoint(tmp_path / "m").model.eval()
    assert loaded.config.own_decoders == ("new",)
    x = torch.rand(2, 1, 64, 64)
    t = torch.tensor([2, 0])
    assert torch.allclose(model(x, t)["d2"], loaded(x, t)["d2"], atol=1e-5)


def test_a_model_without_own_decoders_keeps_its_config_keys():
    net = build_model("propl", tasks=TASKS, input_size=64, pretrained=False)
    assert "own_decoders" not in net.config.to_dict()


@pytest.mark.parametrize(
    ("value", "error"),
    [(["zzz"], "does not have"), (["a", "a"], "duplicate"), ("a", "must be a list")],
)
def test_bad_own_decoders_are_refused(value, error):
    with pytest.raises((TypeError, ValueError), match=error):
        ProPLConfig(tasks=TASKS, own_decoders=value)
