"""TrainConfig and the hooks of fit: augmentations by name, Datasets through a DataLoader, weight decay only on
weights, and the fine-tuning fields (backbone_lr_scale, freeze_stages, head_warmup_epochs)."""
import copy
import dataclasses

import pytest
import torch
from torch import nn

from resnet_arcface import MarginHead, resnet_arcface_small, synthetic_faces
from resnet_arcface.data.augment import AUGMENTATIONS
from resnet_arcface.learn.config import FINETUNE, TrainConfig, adacos_scale
from resnet_arcface.learn.training import STAGES, _param_groups, fit, make_sampler
from single_thread import one_thread  # noqa: F401  (autouse: these tests run on one CPU thread)

QUICK = dict(batch_size=8, device="cpu", progress=False)


@pytest.fixture(scope="module")
def faces():
    return synthetic_faces(4, 4, size=32, seed=0)


def _snapshot(module: nn.Module):
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def _changed(before, module: nn.Module, prefix: str = ""):
    """Names of the state_dict entries under ``prefix`` that differ from ``before``."""
    return {name for name, value in module.state_dict().items()
            if name.startswith(prefix) and not torch.equal(value, before[name])}


# --- TrainConfig -------------------------------------------------------------------------------------------

def test_config_resolves_defaults_for_the_number_of_identities():
    config = TrainConfig().resolved(200)
    assert (config.optimizer, config.lr, config.batch_size) == ("adamw", 2e-3, 64)  # the shipped recipe's
    assert config.s == pytest.approx(7.4859, abs=1e-4) and config.m == 0.5  # sqrt(2) ln(199); ArcFace 0.5
    assert adacos_scale(2) == 1.0  # floored: ln(1) = 0 would make every logit 0
    assert TrainConfig(loss="softmax").resolved(200).s is None
    assert TrainConfig(s=32.0).resolved(200).s == 32.0
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("fields,words", [
    (dict(loss="sphereface"), "unknown loss 'sphereface'"),
    (dict(augment="mixup"), "unknown augment 'mixup'"),
    (dict(epochs=0), "epochs must be an int > 0"),
    (dict(batch_size=1), "batch_size must be an int > 1"),
    (dict(lr=float("nan")), "lr must be a finite number > 0"),
    (dict(seed=-1), "seed must be an int >= 0"),
    (dict(loss="softmax", s=16.0), "softmax loss has no scale"),
    (dict(m=2.0), "below pi/2"),
    (dict(freeze_stages=7), "0..6"),
    (dict(epochs=2, head_warmup_epochs=2), "head_warmup_epochs \\(2\\) must be below epochs \\(2\\)"),
])
def test_config_refuses_bad_fields(fields, words):
    with pytest.raises(ValueError, match=words):
        TrainConfig(**fields)
    with pytest.raises(ValueError, match="unknown fields \\['flip'\\]"):
        TrainConfig.from_dict({"flip": True})


def test_keywords_override_the_config(faces):
    x, y = faces
    with pytest.raises(TypeError, match="augment='flip' or 'none'"):
        fit(resnet_arcface_small(), x, y, flip=False, **QUICK)
    states = []
    fit(resnet_arcface_small(), x, y, TrainConfig(epochs=3, seed=4), epochs=1, on_epoch_end=states.append, **QUICK)
    saved = TrainConfig.from_dict(states[-1]["config"])
    assert (saved.epochs, saved.seed) == (1, 4) and saved.s == pytest.approx(adacos_scale(4))


def test_the_finetune_defaults_are_valid_fields():
    assert TrainConfig(epochs=5, **FINETUNE).backbone_lr_scale == FINETUNE["backbone_lr_scale"]


# --- weight decay ------------------------------------------------------------------------------------------

def test_no_weight_decay_on_prelu_batchnorm_or_biases():
    model, head = resnet_arcface_small(), MarginHead(128, 10)
    groups = _param_groups(model, head, TrainConfig(backbone_lr_scale=0.1).resolved(10))
    decay = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    prelus = [m.weight for m in model.modules() if isinstance(m, nn.PReLU)]
    assert prelus and not any(id(p) in decay for p in prelus)  # slopes are not pulled toward 0 (a ReLU)
    for name, p in model.named_parameters():
        assert (id(p) in decay) == (p.dim() > 1), name  # conv and linear weights decay; BN, PReLU, biases do not
    assert id(head.weight) in decay
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters())) + 1  # each parameter once
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["backbone.decay"] == lrs["backbone.no_decay"] == pytest.approx(0.1 * lrs["head.decay"])


def test_prelu_slopes_keep_their_value_under_heavy_weight_decay(faces):
    # Behaviour, not bookkeeping: with an absurd weight decay and a learning rate of nearly 0 for the gradient
    # (SGD at lr 1e-6 moves a slope by ~1e-6), decoupled decay would still scale the conv weights, not the slopes.
    x, y = faces
    model = resnet_arcface_small()
    slopes = [m.weight.detach().clone() for m in model.modules() if isinstance(m, nn.PReLU)]
    fit(model, x, y, epochs=1, optimizer="sgd", lr=1e-6, weight_decay=1e4, warmup=0.0, **QUICK)
    after = [m.weight for m in model.modules() if isinstance(m, nn.PReLU)]
    for before, now in zip(slopes, after):
        torch.testing.assert_close(now, before, atol=1e-4, rtol=0)


# --- augmentation ------------------------------------------------------------------------------------------

def test_flip_mirrors_about_half_and_draws_only_from_its_generator():
    images = torch.rand(200, 1, 8, 8)
    out = AUGMENTATIONS["flip"](images, torch.Generator().manual_seed(0))
    mirrored = (out != images).flatten(1).any(1)
    assert torch.equal(out[mirrored], images[mirrored].flip(3)) and 70 < int(mirrored.sum()) < 130
    again = AUGMENTATIONS["flip"](images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert AUGMENTATIONS["none"](images, torch.Generator()) is images


def test_fit_calls_the_named_augmentation_with_per_epoch_generators(faces, monkeypatch):
    x, y = faces
    calls = []

    def spy(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        assert images.dim() == 4 and images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1
        assert generator.device.type == "cpu"
        calls.append((float(images.sum()), generator.initial_seed(), float(torch.rand(1, generator=generator))))
        return images

    monkeypatch.setitem(AUGMENTATIONS, "spy", spy)
    states = []
    fit(resnet_arcface_small(), x, y, epochs=2, augment="spy", on_epoch_end=lambda s: states.append(copy.deepcopy(s)),
        **QUICK)
    assert len(calls) == 4 and calls[0][1] != calls[2][1]  # 2 batches per epoch, a new seed each epoch
    straight = calls[2:]
    calls.clear()
    fit(resnet_arcface_small(), x, y, epochs=2, augment="spy", resume=states[0], **QUICK)
    assert calls == straight  # a resumed epoch sees the same batches and the same random draws


# --- data through a DataLoader -----------------------------------------------------------------------------

class Faces8Bit(torch.utils.data.Dataset):
    """Items ``(uint8 image (1, H, W), int label)``, as a folder reader would give them."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def test_a_dataset_trains_exactly_like_the_same_tensors(faces):
    x, y = faces
    pixels = (x * 255).round().to(torch.uint8)
    y = y * 10 + 3  # any integer identities
    models = []
    for data, workers in (((pixels.float() / 255, y), 0), ((Faces8Bit(pixels, y),), 1)):
        torch.manual_seed(0)
        models.append(resnet_arcface_small())
        fit(models[-1], *data, epochs=2, workers=workers, **QUICK)
    for (name, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.equal(a, b), name


def test_bad_datasets_are_refused(faces):
    x, y = faces
    data = Faces8Bit(x.clone(), y)
    with pytest.raises(ValueError, match="do not pass labels too"):
        fit(resnet_arcface_small(), data, y, **QUICK)
    data.labels = y.float()
    with pytest.raises(ValueError, match="`labels` attribute"):
        fit(resnet_arcface_small(), data, **QUICK)
    data.labels = y
    data.images[3, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite pixels"):
        fit(resnet_arcface_small(), data, epochs=1, **QUICK)


def test_the_sampler_visits_everything_once_per_epoch_in_a_seeded_order():
    sampler = make_sampler(range(10), seed=3)
    sampler.set_epoch(1)
    first = list(sampler)
    sampler.set_epoch(2)
    assert sorted(first) == list(range(10)) and list(sampler) != first
    sampler.set_epoch(1)
    assert list(sampler) == first


def test_no_batch_holds_a_single_image(faces):
    x, y = faces  # 16 images in batches of 5: 3 batches, the 16th image waits for another epoch
    history = fit(resnet_arcface_small(), x[:16], y[:16], epochs=1, batch_size=5, device="cpu", progress=False)
    assert history["images_per_s"][0] > 0 and len(history["loss"]) == 1


# --- fine-tuning -------------------------------------------------------------------------------------------

def test_freeze_stages_keeps_weights_and_statistics_of_the_first_stages(faces):
    x, y = faces
    model = resnet_arcface_small()
    model.layer2.requires_grad_(False)  # a flag of the caller's: fit must hand it back as it found it
    flags = [p.requires_grad for p in model.parameters()]
    before = _snapshot(model)
    fit(model, x, y, epochs=1, freeze_stages=2, **QUICK)
    frozen = tuple(name + "." for stage in STAGES[:2] for name in stage)  # conv1, bn1, prelu, layer1
    assert not any(name.startswith(frozen) for name in _changed(before, model))  # running stats included
    assert _changed(before, model, "layer3.") and _changed(before, model, "fc5.")
    assert [p.requires_grad for p in model.parameters()] == flags


def test_freezing_the_whole_network_trains_only_the_head(faces):
    x, y = faces
    model, head = resnet_arcface_small(), MarginHead(128, 4)
    before, head_before = _snapshot(model), _snapshot(head)
    fit(model, x, y, epochs=1, freeze_stages=6, head=head, **QUICK)
    assert not _changed(before, model) and _changed(head_before, head)


def test_backbone_lr_scale_scales_only_the_network(faces):
    x, y = faces
    model, head = resnet_arcface_small(), MarginHead(128, 4)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    head_before = _snapshot(head)
    states = []
    fit(model, x, y, epochs=1, backbone_lr_scale=0.0, head=head, on_epoch_end=states.append, **QUICK)
    assert all(torch.equal(p, params[name]) for name, p in model.named_parameters())  # lr 0: no step, no decay
    assert _changed(head_before, head)
    assert {g["name"]: g["initial_lr"] for g in states[0]["optimizer"]["param_groups"]} == {
        "backbone.decay": 0.0, "backbone.no_decay": 0.0, "head.decay": 2e-3}


def test_head_warmup_trains_only_the_head_first(faces):
    x, y = faces
    model = resnet_arcface_small()
    before = _snapshot(model)
    states = []
    fit(model, x, y, epochs=2, head_warmup_epochs=1, on_epoch_end=lambda s: states.append(copy.deepcopy(s)),
        **QUICK)
    epoch1, epoch2 = states
    assert all(torch.equal(epoch1["model"][k], v) for k, v in before.items())  # eval mode, no gradients
    assert not torch.equal(epoch1["head"]["weight"], epoch2["head"]["weight"])
    assert any(not torch.equal(epoch2["model"][k], v) for k, v in before.items())  # then the network trains


def test_fine_tuning_fields_combine(faces):
    x, y = faces
    model = resnet_arcface_small()
    before = _snapshot(model)
    config = dataclasses.replace(TrainConfig(epochs=2), freeze_stages=1, head_warmup_epochs=1, backbone_lr_scale=0.5)
    fit(model, x, y, config, **QUICK)
    changed = _changed(before, model)
    assert changed and not any(name.startswith(("conv1.", "bn1.", "prelu.")) for name in changed)
