"""The model registry (create_model, list_models), every model's pretrained_cfg, the one transform built from it,
and the device helpers."""
import dataclasses
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import resnet_arcface
from resnet_arcface import (CheckpointMismatchError, PretrainedCfg, ResNetArcFace, create_model, create_transform,
                            list_models, preprocess, resnet_arcface18, resnet_arcface_small, transform_for)
from resnet_arcface.cli.common import ARCHS, UsageError, build_model, saved_arch
from resnet_arcface.data.transforms import resolve_cfg
from resnet_arcface.device import model_device, resolve_device
from single_thread import one_thread  # noqa: F401


# --- create_model / list_models ---------------------------------------------------------------------

def test_one_name_per_architecture():
    assert list_models() == ["resnet_arcface18", "resnet_arcface_small"]
    assert list_models(pretrained=True) == ["resnet_arcface_small"]


def test_resnet_arcface18_is_gfpgans_configuration():
    model = create_model("resnet_arcface18")
    assert sum(p.numel() for p in model.parameters()) == 25_627_081
    assert model.training and model.input_size == 128 and model.embedding_dim == 512 and not model.use_se
    reference = resnet_arcface18()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert model.pretrained_cfg == reference.pretrained_cfg == PretrainedCfg(input_size=128)


def test_resnet_arcface_small_is_the_small_network():
    model = create_model("resnet_arcface_small")
    reference = resnet_arcface_small()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert model.input_size == 32 and model.pretrained_cfg.input_size == 32


def test_overrides_reach_the_network_and_its_cfg():
    model = create_model("resnet_arcface_small", input_size=64, embedding_dim=32)
    assert model.input_size == 64 and model.embedding_dim == 32 and model.pretrained_cfg.input_size == 64
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 1, 64, 64)).shape == (1, 32)


def test_synthetic_weights_are_the_shipped_ones_in_eval_mode():
    model = create_model("resnet_arcface_small", pretrained="synthetic")
    shipped = resnet_arcface.pretrained("synthetic")
    assert not model.training
    assert all(torch.equal(v, shipped.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_checkpoint_path_loads_strictly(tmp_path):
    source = create_model("resnet_arcface_small", input_size=16)
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    model = create_model("resnet_arcface_small", pretrained=path, input_size=16)
    assert not model.training and all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    assert create_model("resnet_arcface_small", pretrained=str(path), input_size=16).input_size == 16
    with pytest.raises(CheckpointMismatchError, match="different shapes"):
        create_model("resnet_arcface_small", pretrained=path)  # 32 px: fc5 does not fit
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        create_model("resnet_arcface18", pretrained=tmp_path / "arcface_resnet18.pth")


@pytest.mark.parametrize("call, message", [
    (lambda: create_model("gfpgan"), r"Unknown model 'gfpgan'; choose one of \['resnet_arcface18', 'resnet_arcface_small'\]"),
    (lambda: create_model("small"), r"choose one of \['resnet_arcface18', 'resnet_arcface_small'\]"),
    (lambda: create_model("resnet_arcface18", pretrained="synthetic"), r"are for \['resnet_arcface_small'\]"),
    (lambda: create_model("resnet_arcface18", pretrained="gfpgan"), r"pretrained must be None, one of .*'synthetic'"),
    (lambda: create_model("resnet_arcface18", pretrained=True), r"pretrained must be None.*got True"),
    (lambda: create_model("resnet_arcface_small", pretrained="synthetic", input_size=64),
     r"overrides change \{'input_size': 64\}.*Drop those overrides"),
    (lambda: create_model("resnet_arcface_small", depth=50), r"unknown argument\(s\) \['depth'\]; it accepts"),
])
def test_bad_names_and_pretrained_values_list_the_choices(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- pretrained_cfg and the transform -----------------------------------------------------------------

def test_every_network_carries_its_cfg_outside_the_state_dict():
    model = ResNetArcFace(input_size=48)
    assert model.pretrained_cfg == PretrainedCfg(input_size=48)
    assert model.pretrained_cfg.shape == (1, 48, 48)
    assert not any("cfg" in k for k in model.state_dict())
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.pretrained_cfg.input_size = 64  # type: ignore[misc]


def test_cfg_says_what_gfpgan_feeds():
    cfg = create_model("resnet_arcface18").pretrained_cfg
    assert (cfg.input_size, cfg.channels, cfg.value_range, cfg.mean, cfg.std, cfg.interpolation, cfg.luma) == \
        (128, 1, (-1.0, 1.0), 0.5, 0.5, "bilinear", (0.2989, 0.5870, 0.1140))
    # the value range follows from mean and std applied to [0, 1]
    assert ((0 - cfg.mean) / cfg.std, (1 - cfg.mean) / cfg.std) == cfg.value_range


@pytest.mark.parametrize("name", ["resnet_arcface18", "resnet_arcface_small"])
def test_the_transform_is_preprocess_bit_for_bit(name):
    model = create_model(name)
    size = model.input_size
    rgb, gray = torch.rand(3, 3, 45, 37), torch.rand(2, 1, 20, 20)
    transform = transform_for(model)
    for images in (rgb, gray, rgb[0]):
        assert torch.equal(transform(images), preprocess(images, size=size))
    # ... and GFPGAN's formula, written out: normalise, luma, bilinear resize (align_corners=False)
    normalised = rgb * 2 - 1
    gray_gfpgan = 0.2989 * normalised[:, 0:1] + 0.5870 * normalised[:, 1:2] + 0.1140 * normalised[:, 2:3]
    expected = F.interpolate(gray_gfpgan, (size, size), mode="bilinear", align_corners=False)
    assert torch.equal(transform(rgb), expected)
    assert torch.equal(transform(normalised, value_range=(-1, 1)), expected)


def test_transform_output_is_the_network_input_on_faces():
    model = create_model("resnet_arcface_small", pretrained="synthetic")
    images, _ = resnet_arcface.synthetic_faces(2, 2, size=50, seed=3)  # any size in, the network's size out
    x = transform_for(model)(images)
    assert x.shape == (4, *model.pretrained_cfg.shape) and x.min() >= -1 and x.max() <= 1
    with torch.no_grad():
        assert model(x).shape == (4, model.embedding_dim)


def test_create_transform_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="PretrainedCfg"):
        create_transform({"input_size": 128})
    with pytest.raises(ValueError, match="channels=1"):
        create_transform(PretrainedCfg(channels=3))
    with pytest.raises(ValueError, match="interpolation"):
        create_transform(PretrainedCfg(interpolation="lanczos"))
    with pytest.raises(ValueError, match="float images"):
        transform_for(create_model("resnet_arcface_small"))(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_resolve_cfg_for_modules_without_one():
    class Student(torch.nn.Module):
        input_size = 64

    assert resolve_cfg(Student()) == PretrainedCfg(input_size=64)
    assert resolve_cfg(torch.nn.Linear(2, 2)).input_size == 128  # GFPGAN's, the reference's only size


# --- devices ------------------------------------------------------------------------------------------

def test_model_device_and_resolve_device():
    assert model_device(create_model("resnet_arcface_small")) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")  # no tensors: the CPU
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(torch.device("cpu")).type == "cpu"
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # an explicit index is taken as given
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu:0")


# --- the commands use the registry's names ------------------------------------------------------------

def test_cli_architectures_are_the_registry():
    assert ARCHS == {"resnet_arcface18": 128, "resnet_arcface_small": 32}
    assert build_model("resnet_arcface_small", 64).input_size == 64
    assert saved_arch("small") == "resnet_arcface_small" and saved_arch("resnet_arcface18") == "resnet_arcface18"
    with pytest.raises(UsageError, match="--arch small: unknown network"):
        build_model("small", 32)
    with pytest.raises(UsageError, match="--size 40"):
        build_model("resnet_arcface18", 40)


def test_bench_model_choices_are_the_registry():
    out = subprocess.run([sys.executable, "-m", "resnet_arcface.deploy.bench", "--model", "gfpgan"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "invalid choice: 'gfpgan'" in out.stderr
    assert "resnet_arcface18" in out.stderr and "resnet_arcface_small" in out.stderr


def test_embed_feeds_the_model_through_its_own_cfg():
    """embed reads the model's pretrained_cfg (not a hard-coded preprocess): change the cfg, the input changes."""
    model = create_model("resnet_arcface_small", pretrained="synthetic")
    images, _ = resnet_arcface.synthetic_faces(2, 1, size=45, seed=5)
    model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, interpolation="area")
    with torch.no_grad():
        expected = model(create_transform(model.pretrained_cfg)(images))
        gfpgan_steps = model(preprocess(images, size=model.input_size))
    torch.testing.assert_close(resnet_arcface.embed(model, images, normalize=False), expected)
    assert not torch.allclose(expected, gfpgan_steps)
