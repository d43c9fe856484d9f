"""Contract tests for every registered model (forward/backward, shapes, prompts matter)."""

import pytest
import torch

from propl.models import build_model, list_models
from propl.models.encoder import EfficientNetLite0, lite0_weights_path, load_lite0_imagenet

TASKS = ("a", "b", "c")


@pytest.fixture(params=list_models())
def model(request):
    torch.manual_seed(0)
    return build_model(request.param, tasks=TASKS, input_size=64, pretrained=False)


def test_forward_backward_shapes(model):
    x = torch.rand(2, 1, 64, 64, requires_grad=True)
    out = model(x, torch.tensor([0, 2]))
    assert set(out) == {"d1", "d2"}
    for logits in out.values():
        assert logits.shape == (2, 1, 64, 64)
        assert torch.isfinite(logits).all()
    (out["d1"].mean() + out["d2"].mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert model.prompts.grad is not None and model.prompts.grad[1].abs().sum() == 0  # unused task
    assert all(p.grad is not None for n, p in model.named_parameters() if "decoder2" in n)


def test_prompt_changes_output(model):
    model.eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        a = model(x, torch.tensor([0]))["d2"]
        b = model(x, torch.tensor([1]))["d2"]
    assert (a - b).abs().max() > 1e-4


def test_non_square_and_bad_shapes(model):
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 64, 96), torch.tensor([0]))
    assert out["d2"].shape == (1, 1, 64, 96)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 1, 50, 64), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.rand(1, 3, 64, 64), torch.tensor([0]))
    with pytest.raises(ValueError, match="task_ids"):
        model(torch.rand(2, 1, 64, 64), torch.tensor([0]))


def test_mc_dropout_varies_and_decoder2_is_deterministic(model):
    model.eval()
    x = torch.rand(2, 1, 64, 64)
    t = torch.tensor([0, 1])
    with torch.no_grad():
        feats = model.encode(x)
        mc = model.mc_decoder1(feats, t, samples=4)
        d2a, d2b = model.decode(feats, t, 2), model.decode(feats, t, 2)
    assert mc.shape == (4, 2, 1, 64, 64)
    assert mc.var(0).max() > 0  # dropout active in eval for MC passes
    assert torch.equal(d2a, d2b)


@pytest.mark.parametrize("training", [False, True])
def test_mc_passes_share_the_skips_and_match_full_repeats(model, training):
    """The MC passes repeat only the dropped (deepest) feature and compute the skips' share of
    each fusion once: same dropout masks, same numbers as decoding T full copies (in training
    mode too, where batch-norm statistics span all T samples)."""
    model.train(training)
    x = torch.rand(2, 1, 64, 64)
    t = torch.tensor([0, 2])
    with torch.no_grad():
        feats = model.encode(x)
        torch.manual_seed(7)
        shared = model.mc_decoder1(feats, t, samples=3)
        torch.manual_seed(7)
        full = model.decode([f.repeat(3, 1, 1, 1) for f in feats], t.repeat(3), 1, mc=True)
    full = torch.sigmoid(full).view(3, 2, 1, 64, 64)
    assert shared.var(0).max() > 0
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=1e-4)


def test_unknown_model_lists_names():
    with pytest.raises(KeyError, match="propl"):
        build_model("nope", tasks=TASKS)


def test_add_tasks_keeps_old_prompts(model):
    old = model.prompts.detach().clone()
    model.add_tasks(("a", "d"))
    assert model.config.tasks == ("a", "b", "c", "d")
    assert torch.equal(model.prompts[:3], old)
    assert model.task_index("d") == 3
    with pytest.raises(KeyError, match="knows"):
        model.task_index("zzz")


def test_a_new_prompt_is_the_same_wherever_the_task_is_added(model):
    """The model a retrain trains and the baseline it is judged against each add the new task in
    their own process: the prompt must not depend on the random state there."""
    twin = build_model(model.registry_name, tasks=TASKS, input_size=64, pretrained=False)
    twin.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    model.add_tasks(("d", "e"))
    torch.manual_seed(2)
    twin.add_tasks(("d", "e"))
    assert torch.equal(model.prompts, twin.prompts)
    state = torch.random.get_rng_state()
    model.add_tasks(("f",))
    assert torch.equal(torch.random.get_rng_state(), state)  # global stream untouched
    assert not torch.equal(model.prompts[3], model.prompts[4])  # each task its own prompt
    assert not torch.equal(model.prompts[3], model.prompts[:3].mean(0))  # noise added


def test_all_296_pretrained_tensors_load():
    full = EfficientNetLite0(include_head=True)
    report = load_lite0_imagenet(full)
    assert report.total == 296 and len(report.loaded) == 296 and not report.skipped
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    for key, value in full.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_encoder_without_head_skips_only_head_and_classifier():
    report = load_lite0_imagenet(EfficientNetLite0())
    assert len(report.loaded) == 288
    assert {k.split(".")[0] for k in report.skipped} == {"_conv_head", "_bn1", "_fc"}


def test_pretrained_encoder_features():
    model = build_model("propl", tasks=TASKS, input_size=64, pretrained=True).eval()
    with torch.no_grad():
        feats = model.encode(torch.rand(1, 1, 64, 64))
    assert [f.shape[1] for f in feats] == [24, 40, 112, 320]
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]


def test_fused_batchnorm_gives_same_outputs(model):
    from propl.models.fuse import fuse_batchnorm

    model.train()
    model(torch.rand(4, 1, 64, 64), torch.tensor([0, 1, 2, 0]))  # non-trivial BN statistics
    model.eval()
    fused = fuse_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert model.training is False and any(
        isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()
    )
    x, t = torch.rand(2, 1, 64, 64), torch.tensor([1, 2])
    with torch.no_grad():
        assert torch.allclose(model(x, t)["d2"], fused(x, t)["d2"], atol=1e-4)


def test_a_fresh_model_is_drawn_from_its_seed():
    """`propl train --seed S` and the benchmarks rebuild the same starting network from S."""
    from propl.train.recipe import init_model

    def fresh(seed):
        return init_model(TASKS, "propl-small", seed=seed, input_size=64, pretrained=False)

    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    a, b, c = fresh(0), fresh(0), fresh(1)
    assert torch.equal(torch.random.get_rng_state(), state)  # global stream untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
