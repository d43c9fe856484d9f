"""Checkpoints: safetensors + JSON round trip; pickles and corrupt files refused clearly."""

import json
import pickle

import pytest
import torch

from propl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from propl.models import build_model


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("propl-small", tasks=("a", "b"), input_size=64, pretrained=False).eval()


def test_round_trip_restores_outputs(model, tmp_path):
    save_checkpoint(model, tmp_path / "ck", metadata={"note": "x"})
    ckpt = load_checkpoint(tmp_path / "ck")
    assert ckpt.name == "propl-small" and ckpt.metadata == {"note": "x"}
    assert ckpt.model.config.tasks == ("a", "b")
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(
            model(x, torch.tensor([1]))["d2"], ckpt.model(x, torch.tensor([1]))["d2"]
        )
    # loading by the weights file or the json works too
    assert load_checkpoint(tmp_path / "ck" / "model.safetensors").model.config == ckpt.model.config
    assert load_checkpoint(tmp_path / "ck" / "model.json").name == "propl-small"


def test_a_model_placed_on_the_cpu_is_channels_last_same_outputs_and_saves(model, tmp_path):
    """On the CPU the convolutions run channels-last (faster with oneDNN): the outputs stay
    the same, and a checkpoint of the placed model loads back with the same weights."""
    import copy

    from propl.device import place_model

    x, t = torch.rand(2, 1, 64, 64), torch.tensor([0, 1])
    placed = place_model(copy.deepcopy(model), torch.device("cpu"))
    convs = [p for p in placed.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert any(not p.is_contiguous() for p in convs)  # the layout really changed
    with torch.no_grad():
        torch.testing.assert_close(placed(x, t)["d2"], model(x, t)["d2"], rtol=1e-4, atol=1e-5)
    save_checkpoint(placed, tmp_path / "ck")
    loaded = load_checkpoint(tmp_path / "ck").model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_fp16_checkpoint_is_smaller_and_close(model, tmp_path):
    w32 = save_checkpoint(model, tmp_path / "f32")
    w16 = save_checkpoint(model, tmp_path / "f16", dtype=torch.float16)
    assert w16.stat().st_size < 0.6 * w32.stat().st_size
    m16 = load_checkpoint(tmp_path / "f16").model
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        a, b = model(x, torch.tensor([0]))["d2"], m16(x, torch.tensor([0]))["d2"]
    assert next(m16.parameters()).dtype == torch.float32
    assert (torch.sigmoid(a) - torch.sigmoid(b)).abs().max() < 0.02


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".pkl", ".ckpt"])
def test_pickle_suffix_refused(tmp_path, suffix, model):
    path = tmp_path / f"weights{suffix}"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)


def test_pickle_disguised_as_safetensors_refused(model, tmp_path):
    save_checkpoint(model, tmp_path / "ck")
    weights = tmp_path / "ck" / "model.safetensors"
    weights.write_bytes(pickle.dumps({"evil": 1}))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(tmp_path / "ck")
    torch.save(model.state_dict(), weights)  # torch zip archive
    with pytest.raises(CheckpointError, match="pickle or torch archive"):
        load_checkpoint(tmp_path / "ck")


def test_corrupt_and_missing_files_named(model, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    save_checkpoint(model, tmp_path / "ck")
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(tmp_path / "ck")
    save_checkpoint(model, tmp_path / "ck2")
    (tmp_path / "ck2" / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="model.json"):
        load_checkpoint(tmp_path / "ck2")


def test_config_weights_mismatch(model, tmp_path):
    save_checkpoint(model, tmp_path / "ck")
    doc = json.loads((tmp_path / "ck" / "model.json").read_text())
    doc["config"]["channels"] = [8, 8, 8, 8]
    (tmp_path / "ck" / "model.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "ck")


def test_config_keys_from_older_versions_are_ignored(tmp_path) -> None:
    import json

    from propl.checkpoint import load_checkpoint, save_checkpoint
    from propl.models import build_model

    model = build_model("propl-small", tasks=("a",), input_size=64, pretrained=False)
    out = save_checkpoint(model, tmp_path / "ck")
    meta = tmp_path / "ck" / "model.json"
    doc = json.loads(meta.read_text())
    doc["config"]["extra"] = {}  # written by 0.1.0 development builds
    meta.write_text(json.dumps(doc))
    assert load_checkpoint(out).model.config.tasks == ("a",)
