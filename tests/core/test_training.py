"""Training: every method lowers the loss on synthetic data; stop, resume, events, NaN guard."""

import json

import numpy as np
import pytest
import torch

from propl.data.augment import warp
from propl.data.benchmark import ArraySet
from propl.data.synthetic import SYNTHETIC_TASKS, make_arrays
from propl.models import build_model
from propl.train.losses import bce_dice
from propl.train.methods import METHODS, MethodOptions
from propl.train.trainer import TaskBalancedSampler, TrainConfig, Trainer, to_tensor

SIZE = 64


def arrays(n: int, seed: int) -> ArraySet:
    return make_arrays(n, SIZE, seed)


@pytest.fixture(scope="module")
def data():
    return arrays(8, 0), arrays(8, 1), arrays(4, 2)


def new_model(pretrained: bool = False):
    torch.manual_seed(0)
    return build_model("propl-small", tasks=SYNTHETIC_TASKS, input_size=SIZE, pretrained=pretrained)


def small_config(method: str, steps: int, **kw) -> TrainConfig:
    """A few CPU steps of two labelled (and two unlabelled) scans, no validation."""
    kw = {"batch_size": 2, "unlabelled_batch_size": 2, "eval_every": 100, "device": "cpu"} | kw
    return TrainConfig(method=method, steps=steps, **kw)


def labelled_loss(model, lab: ArraySet) -> float:
    model.eval()
    with torch.no_grad():
        x = to_tensor(lab.images, torch.device("cpu"))
        y = torch.from_numpy(lab.masks).unsqueeze(1).float()
        return float(bce_dice(model(x, torch.from_numpy(lab.task_index))["d2"], y))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_lowers_loss(method, data):
    lab, unlab, val = data
    model = new_model()
    before = labelled_loss(model, lab)
    cfg = TrainConfig(
        method=method,
        steps=25,
        batch_size=4,
        unlabelled_batch_size=4,
        lr=3e-3,
        eval_every=25,
        device="cpu",
        warmup=0.0,
    )
    events = list(Trainer(model, cfg, lab, unlab, val).run())
    after = labelled_loss(model, lab)
    assert after < 0.85 * before, (method, before, after)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("step") == 25
    step = next(e for e in events if e.kind == "step")
    json.loads(step.to_json())  # events are JSON-serialisable (subprocess progress)
    assert {"loss", "lr", "img_per_s", "sup"} <= set(step.data)


@pytest.mark.parametrize(
    ("mode", "view"),
    [("uplc", "weak"), ("weighted", "weak"), ("agreement", "weak"), ("hermes", "weak")]
    + [("uplc", "strong"), ("weighted", "strong")],
)
@pytest.mark.parametrize("teacher", ["self", "ema"])
def test_propl_pseudo_label_modes_train(mode, view, teacher, data):
    lab, unlab, _ = data
    options = MethodOptions(pseudo_label=mode, view=view, teacher=teacher)
    cfg = small_config("propl", 2, options=options)
    events = list(Trainer(new_model(), cfg, lab, unlab).run())
    steps = [e for e in events if e.kind == "step"]
    assert len(steps) == 2 and all(np.isfinite(e.data["unsup"]) for e in steps)
    assert 0.0 <= steps[-1].data["kept"] <= 1.0


def test_ssl_method_without_unlabelled_is_refused(data):
    with pytest.raises(ValueError, match="unlabelled"):
        Trainer(new_model(), TrainConfig(method="propl", device="cpu"), data[0], None)


def test_bad_config_rejected():
    with pytest.raises(ValueError, match="unknown method"):
        TrainConfig(method="magic")
    with pytest.raises(ValueError):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="view"):
        TrainConfig(options=MethodOptions(view="sideways"))
    with pytest.raises(ValueError, match="teacher"):
        TrainConfig(options=MethodOptions(teacher="oracle"))
    with pytest.raises(ValueError, match="unsup_weight"):
        TrainConfig(options=MethodOptions(unsup_weight=-1.0))


def test_propl_ema_teacher_makes_the_pseudo_labels_and_trails_the_student(data, monkeypatch):
    lab, unlab, _ = data
    cfg = small_config("propl", 5, lr=3e-3, options=MethodOptions(teacher="ema", ema_decay=0.5))
    model = new_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, cfg, lab, unlab)
    teacher = trainer.method.teacher
    assert teacher is not None and not any(p.requires_grad for p in teacher.parameters())
    calls = {"teacher": 0, "student": 0}
    for who, net in (("teacher", teacher), ("student", model)):
        original = net.mc_decoder1

        def counting(*a, _who=who, _original=original, **kw):
            calls[_who] += 1
            return _original(*a, **kw)

        monkeypatch.setattr(net, "mc_decoder1", counting)
    list(trainer.run())
    assert calls == {"teacher": 5, "student": 0}  # the EMA copy's decoder 1, every step

    def distance(a: dict, b: dict) -> float:
        return sum(float((a[k].float() - b[k].float()).norm()) for k, _ in model.named_parameters())

    student, ema = model.state_dict(), teacher.state_dict()
    assert 0 < distance(ema, student) < distance(start, student)  # between start and student


@pytest.mark.parametrize(
    "method,options",
    [("mean-teacher", MethodOptions()), ("propl", MethodOptions(teacher="ema"))],
)
def test_stop_then_resume_equals_uninterrupted(method, options, data, tmp_path):
    lab, unlab, val = data
    cfg = small_config(method, 6, options=options)
    straight = new_model()
    list(Trainer(straight, cfg, lab, unlab, val, tmp_path / "a").run())

    interrupted = new_model()
    checks = []

    def stop_after_three_steps() -> bool:  # asked once before every step
        checks.append(1)
        return len(checks) > 3

    trainer = Trainer(interrupted, cfg, lab, unlab, val, tmp_path / "b")
    events = list(trainer.run(should_stop=stop_after_three_steps))
    assert events[-1].kind == "stopped" and events[-1].step == 3
    assert (tmp_path / "b" / "last" / "train_state.safetensors").is_file()

    resumed = new_model()
    events = list(Trainer(resumed, cfg, lab, unlab, val, tmp_path / "b").run(resume=True))
    assert [e.kind for e in events if e.kind == "step"] == ["step"] * 3
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


def test_a_state_saved_with_the_fused_optimiser_resumes_on_the_cpu(data, tmp_path):
    """A run stopped on a GPU (where AdamW is fused) resumes here with this device's way of
    stepping, and the saved moments carry over."""
    lab = data[0]
    cfg = small_config("supervised", 4)
    calls = []
    first = Trainer(new_model(), cfg, lab, out_dir=tmp_path)
    assert first.optimizer.param_groups[0]["fused"] is None  # the CPU default
    list(first.run(should_stop=lambda: len(calls) > 2 or calls.append(1)))
    doc_path = tmp_path / "last" / "train_state.json"
    doc = json.loads(doc_path.read_text())
    for group in doc["param_groups"]:  # as a CUDA run writes it
        group["fused"], group["foreach"] = True, None
    doc_path.write_text(json.dumps(doc))
    moments = {k: v.clone() for k, v in first.optimizer.state_dict()["state"][0].items()}

    resumed = Trainer(new_model(), cfg, lab, out_dir=tmp_path)
    resumed.load_state()
    assert all(g["fused"] is None for g in resumed.optimizer.param_groups)
    state = resumed.optimizer.state_dict()["state"][0]
    assert all(torch.equal(state[k], v) for k, v in moments.items())
    events = list(resumed.run(resume=True))
    assert events[-1].kind == "done" and resumed.step == 4


def test_best_checkpoint_and_log_written(data, tmp_path):
    lab, unlab, val = data
    cfg = TrainConfig(method="supervised", steps=4, batch_size=2, eval_every=2, device="cpu")
    trainer = Trainer(new_model(), cfg, lab, None, val, tmp_path)
    events = list(trainer.run())
    evals = [e for e in events if e.kind == "eval"]
    assert len(evals) == 2 and 0 <= evals[0].data["mdice"] <= 100
    assert set(evals[0].data["per_task"]) == set(SYNTHETIC_TASKS)
    assert (tmp_path / "best" / "model.safetensors").is_file()
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["kind"] == "start" and json.loads(lines[-1])["kind"] == "done"


def test_nan_loss_stops_training(data, monkeypatch):
    lab = data[0]
    trainer = Trainer(new_model(), TrainConfig(method="supervised", steps=3, device="cpu"), lab)
    monkeypatch.setattr(
        trainer.method,
        "loss",
        lambda batch, progress: (torch.tensor(float("nan"), requires_grad=True), {}),
    )
    with pytest.raises(FloatingPointError, match="nan"):
        list(trainer.run())


def test_frozen_encoder_does_not_move(data):
    model = new_model()
    before = {k: v.clone() for k, v in model.encoder.state_dict().items() if "weight" in k}
    cfg = TrainConfig(method="supervised", steps=2, batch_size=2, device="cpu", freeze_encoder=True)
    list(Trainer(model, cfg, data[0]).run())
    after = model.encoder.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


@pytest.mark.parametrize("method", ["supervised", "unimatch"])
def test_incremental_training_keeps_every_batchnorm_statistic(data, method):
    """With freeze_norm_stats no learnt BatchNorm running statistic moves, even when a method
    runs an eval-mode pass in between (UniMatch's pseudo-labels); the weights still learn.
    Statistics never learnt (a layer that has not seen a batch) are learnt."""
    model = new_model()
    fresh = new_model()
    for norm in model.modules():  # as in a trained checkpoint
        if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
            norm.num_batches_tracked.fill_(100)

    def norm_stats():
        return {
            name: b.clone()
            for name, b in model.named_buffers()
            if name.endswith(("running_mean", "running_var"))
        }

    before = norm_stats()
    assert any(not n.startswith("encoder") for n in before)  # the decoders have some too
    weights = {k: v.clone() for k, v in model.decoder2.state_dict().items() if "weight" in k}
    cfg = TrainConfig(
        method=method, steps=3, batch_size=2, device="cpu", freeze_encoder=True,
        freeze_norm_stats=True, eval_every=1000,
    )  # fmt: skip
    list(Trainer(model, cfg, data[0], data[1] if method == "unimatch" else None).run())
    after = norm_stats()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    moved = model.decoder2.state_dict()
    assert any(not torch.equal(v, moved[k]) for k, v in weights.items())
    # never learnt: they follow the batches even with freeze_norm_stats
    start = {n: b.clone() for n, b in fresh.named_buffers() if n.endswith("running_mean")}
    list(Trainer(fresh, cfg, data[0], data[1] if method == "unimatch" else None).run())
    now = dict(fresh.named_buffers())
    assert any(not torch.equal(v, now[k]) for k, v in start.items() if "decoder" in k)
    counts = [int(m.num_batches_tracked) for n, m in fresh.named_modules() if "running_mean"
              in dict(m.named_buffers(recurse=False)) and n.startswith("decoder")]  # fmt: skip
    assert counts and min(counts) >= cfg.steps  # learnt through every step, not just the first
    # without it the decoders' learnt statistics follow the batches
    list(Trainer(model, TrainConfig(method="supervised", steps=2, batch_size=2, device="cpu"),
                 data[0]).run())  # fmt: skip
    changed = norm_stats()
    assert any(not torch.equal(v, changed[k]) for k, v in before.items() if "decoder" in k)


def test_prompts_learn_the_right_target():
    """Same images, two tasks (bright vs dark blob): only the prompt tells which to segment."""
    from propl.data.synthetic import make_scan
    from propl.metrics import dice

    model = new_model(pretrained=True)
    cfg = TrainConfig(
        method="supervised",
        steps=100,
        batch_size=8,
        lr=3e-3,
        device="cpu",
        eval_every=1000,
        warmup=0.0,
    )
    list(Trainer(model, cfg, arrays(16, 0)).run())
    model.eval()
    rng = np.random.default_rng(7)
    right, wrong = [], []
    for _ in range(6):  # held-out scans, each with both targets
        image, bright, dark = make_scan(SIZE, rng)
        x = to_tensor(image[None], torch.device("cpu"))
        with torch.no_grad():
            pred = [(model(x, torch.tensor([t]))["d2"][0, 0] > 0).numpy() for t in (0, 1)]
        right += [dice(pred[0], bright), dice(pred[1], dark)]
        wrong += [dice(pred[0], dark), dice(pred[1], bright)]
    assert np.mean(right) > 0.5 and np.mean(right) > np.mean(wrong) + 0.3, (right, wrong)


@pytest.mark.parametrize("method", ["propl", "supervised"])
def test_cached_features_are_the_encoders_and_training_on_them_lowers_the_loss(method, data):
    lab, unlab, _ = data
    model = new_model(pretrained=True)
    before = labelled_loss(model, lab)
    cfg = TrainConfig(
        method=method,
        steps=60,
        batch_size=4,
        unlabelled_batch_size=4,
        lr=3e-3,
        device="cpu",
        eval_every=1000,
        warmup=0.0,
        freeze_encoder=True,
        cache_features=True,
    )
    trainer = Trainer(model, cfg, lab, unlab)
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    events = list(trainer.run())
    assert events[0].kind == "start" and events[0].data["cached_features"] is True
    model.encoder.eval()
    views, thetas = cfg.feature_views, trainer.view_thetas["l"]
    assert trainer.features["l"][0].shape[:2] == (views, len(lab.images)) and views > 1
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert torch.equal(thetas[0], identity.expand_as(thetas[0]))  # view 0: the image itself
    assert not torch.allclose(thetas[1], thetas[2])  # the others: different weak views
    x = to_tensor(lab.images, torch.device("cpu"))
    with torch.no_grad():  # each view is the encoder's features of the warped image
        for v in range(views):
            fresh = model.encode(warp(x, thetas[v]))
            for cached, computed in zip(trainer.features["l"], fresh, strict=True):
                torch.testing.assert_close(cached[v].float(), computed, atol=2e-2, rtol=2e-2)
    assert ("u" in trainer.features) == (method == "propl")
    # a batch's masks follow the geometry of the view its features come from
    batch = trainer._batch(TaskBalancedSampler(lab.task_index, np.random.default_rng(0)), None)
    level = trainer.features["l"][0].float()
    masks = torch.from_numpy(lab.masks).unsqueeze(1).float()
    for feat, y in zip(batch.f_l[0], batch.y_l, strict=True):
        v, n = (level == feat).flatten(2).all(-1).nonzero()[0].tolist()
        assert torch.equal(y, warp(masks[n : n + 1], thetas[v, n : n + 1], "nearest")[0])
    # the encoder, BatchNorm statistics included, is untouched; the decoders learned
    after = model.encoder.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in encoder_before.items())
    assert labelled_loss(model, lab) < 0.85 * before  # as far as without the cache (~0.7)


def test_feature_cache_needs_a_frozen_encoder_and_a_geometric_view():
    with pytest.raises(ValueError, match="feature_views"):
        TrainConfig(freeze_encoder=True, cache_features=True, feature_views=0)
    with pytest.raises(ValueError, match="cache_features"):
        TrainConfig(cache_features=True)
    with pytest.raises(ValueError, match="cache_features"):
        TrainConfig(method="unimatch", freeze_encoder=True, cache_features=True)
    with pytest.raises(ValueError, match="cache_features"):
        TrainConfig(freeze_encoder=True, cache_features=True, options=MethodOptions(view="strong"))


def _drift(before: torch.nn.Module, after: torch.nn.Module) -> float:
    a, b = before.state_dict(), after.state_dict()
    return sum(
        float(((b[k].float() - v.float()) ** 2).sum())
        for k, v in a.items()
        if k.startswith("decoder") and v.is_floating_point()
    )


def test_anchor_keeps_shared_weights_near_their_start_but_leaves_prompts_free(data):
    """L2-SP: the same run with a strong anchor moves the decoders far less, and the anchor
    (a penalty on the shared weights) is logged with the loss; prompt tokens are not anchored."""
    lab = data[0]
    start = new_model()
    runs = {}
    for anchor in (0.0, 10.0):
        model = new_model()
        cfg = TrainConfig(
            method="supervised", steps=15, batch_size=4, lr=3e-3, device="cpu", anchor=anchor
        )
        trainer = Trainer(model, cfg, lab)
        assert ("prompts" in trainer.start_weights) is False
        assert bool(trainer.start_weights) is (anchor > 0)
        steps = [e for e in trainer.run() if e.kind == "step"]
        assert ("anchor" in steps[-1].data) is (anchor > 0)
        runs[anchor] = model
    assert _drift(start, runs[10.0]) < 0.5 * _drift(start, runs[0.0])
    with pytest.raises(ValueError, match="anchor"):
        TrainConfig(anchor=-1.0)


def test_resumed_run_stays_anchored_to_where_it_started(data, tmp_path):
    lab = data[0]
    cfg = TrainConfig(method="supervised", steps=6, batch_size=2, device="cpu", anchor=1.0)
    first = Trainer(new_model(), cfg, lab, out_dir=tmp_path)
    start = {k: v.clone() for k, v in first.start_weights.items()}
    calls = []
    list(first.run(should_stop=lambda: len(calls) > 2 or calls.append(1)))
    resumed = Trainer(new_model(), cfg, lab, out_dir=tmp_path)
    resumed.load_state()
    moved = resumed.model.state_dict()
    assert any(not torch.equal(moved[k], v) for k, v in start.items())  # it did train
    assert all(torch.equal(resumed.start_weights[k], v) for k, v in start.items())


def test_cached_views_after_the_first_get_colour_changes_when_asked(data):
    """view_photometric: view 0 stays the image itself; the other views are the same warps,
    with the strong view's colour changes on top (their features differ from plain warps)."""
    lab, unlab, _ = data
    plain, coloured = [
        Trainer(
            new_model(pretrained=True),
            TrainConfig(
                method="supervised", steps=1, device="cpu", freeze_encoder=True,
                cache_features=True, feature_views=3, view_photometric=strength,
            ),
            lab,
        )
        for strength in (0.0, 1.0)
    ]  # fmt: skip
    for t in (plain, coloured):
        t._cache_features()
    assert torch.equal(plain.view_thetas["l"], coloured.view_thetas["l"])  # the same warps
    first_plain, first_coloured = plain.features["l"][-1], coloured.features["l"][-1]
    torch.testing.assert_close(first_plain[0], first_coloured[0])  # view 0: the image itself
    for v in (1, 2):
        assert not torch.allclose(first_plain[v].float(), first_coloured[v].float(), atol=1e-2)
