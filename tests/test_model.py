"""ResNetArcFace: the GFPGAN configuration's exact structure, arithmetic, mends and input contract."""
import math

import pytest
import torch
from torch import nn

import functional_oracle as oracle
from conftest import randomize_
from resnet_arcface import (BasicBlock, Bottleneck, IRBlock, ResNetArcFace, resnet_arcface18,
                            resnet_arcface_small, validate_input)


@pytest.fixture(scope="module")
def gfpgan_model():
    torch.manual_seed(0)
    return resnet_arcface18()


def expected_gfpgan_shapes():
    """The GFPGAN configuration's state_dict, key -> shape, derived from the fidelity contract (CONTRIBUTING.md)."""
    shapes = {}

    def bn(p, c):
        shapes.update({f"{p}.weight": (c,), f"{p}.bias": (c,), f"{p}.running_mean": (c,),
                       f"{p}.running_var": (c,), f"{p}.num_batches_tracked": ()})

    shapes["conv1.weight"] = (64, 1, 3, 3)
    bn("bn1", 64)
    shapes["prelu.weight"] = (1,)
    inplanes = 64
    for stage, planes in enumerate((64, 128, 256, 512), start=1):
        for i in range(2):
            p = f"layer{stage}.{i}"
            bn(f"{p}.bn0", inplanes)
            shapes[f"{p}.conv1.weight"] = (inplanes, inplanes, 3, 3)
            bn(f"{p}.bn1", inplanes)
            shapes[f"{p}.prelu.weight"] = (1,)
            shapes[f"{p}.conv2.weight"] = (planes, inplanes, 3, 3)
            bn(f"{p}.bn2", planes)
            if i == 0 and stage > 1:
                shapes[f"{p}.downsample.0.weight"] = (planes, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes)
            inplanes = planes
    bn("bn4", 512)
    shapes.update({"fc5.weight": (512, 512 * 8 * 8), "fc5.bias": (512,)})
    bn("bn5", 512)
    return shapes


def test_gfpgan_configuration_counts(gfpgan_model):
    sd = gfpgan_model.state_dict()
    assert len(sd) == 181
    assert sum(p.numel() for p in gfpgan_model.parameters()) == 25_627_081
    assert sum(p.numel() for p in ResNetArcFace("IRBlock", (2, 2, 2, 2), use_se=True).parameters()) == 25_716_169


def test_gfpgan_configuration_keys_and_shapes(gfpgan_model):
    got = {k: tuple(v.shape) for k, v in gfpgan_model.state_dict().items()}
    assert got == expected_gfpgan_shapes()


def test_top_level_names(gfpgan_model):
    assert [name for name, _ in gfpgan_model.named_children()] == [
        "conv1", "bn1", "prelu", "maxpool", "layer1", "layer2", "layer3", "layer4", "bn4", "dropout", "fc5", "bn5"]
    assert gfpgan_model.dropout.p == 0.5 and gfpgan_model.maxpool.kernel_size == 2


def test_forward_matches_functional_oracle(gfpgan_model):
    model = randomize_(ResNetArcFace("IRBlock", (2, 2, 2, 2), use_se=False), seed=1).eval()
    x = torch.randn(3, 1, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x), oracle.resnet_arcface(model.state_dict(), x), rtol=1e-4, atol=1e-4)


def test_forward_with_se_matches_functional_oracle():
    model = randomize_(ResNetArcFace("IRBlock", (1, 1, 1, 1), use_se=True), seed=2).eval()
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x), oracle.resnet_arcface(model.state_dict(), x, (1, 1, 1, 1)),
                                   rtol=1e-4, atol=1e-4)


def test_initialisation(gfpgan_model):
    for m in gfpgan_model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert bool((m.weight == 1).all()) and bool((m.bias == 0).all())
        elif isinstance(m, nn.PReLU):
            assert bool((m.weight == 0.25).all())
        elif isinstance(m, nn.Linear):
            assert bool((m.bias == 0).all())
    # Xavier-normal: std = sqrt(2 / (fan_in + fan_out)); PyTorch's default (Kaiming-uniform, a=sqrt 5) differs.
    for m in (gfpgan_model.layer3[0].conv2, gfpgan_model.fc5):
        fan_out, fan_in = m.weight.shape[0], m.weight[0].numel()
        fan_out *= m.weight[0, 0].numel()
        assert m.weight.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.03)


def test_embedding_shape_and_train_mode(gfpgan_model):
    x = torch.randn(2, 1, 128, 128)
    gfpgan_model.train()
    assert gfpgan_model(x).shape == (2, 512)
    gfpgan_model.eval()
    assert gfpgan_model(x[:1]).shape == (1, 512)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = ResNetArcFace("IRBlock", (1, 1, 1, 1), use_se=True)
    model(torch.randn(2, 1, 128, 128)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert missing == []


def test_deterministic_on_cpu_under_a_seed():
    def run():
        torch.manual_seed(123)
        model = ResNetArcFace("IRBlock", (1, 1, 1, 1), use_se=False)
        return model(torch.randn(2, 1, 128, 128))  # train mode: dropout draws from the same seed too

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


@pytest.mark.parametrize("block,name", [("BasicBlock", BasicBlock), ("Bottleneck", Bottleneck), (IRBlock, IRBlock)])
def test_mended_traps_every_block_type_builds(block, name):
    model = ResNetArcFace(block, (1, 1, 1, 1), use_se=True).eval()
    assert model.block is name
    assert model(torch.randn(1, 1, 128, 128)).shape == (1, 512)
    assert model.layer4[0].downsample[0].out_channels == 512 * name.expansion


def test_bottleneck_stage_widths_follow_expansion():
    model = ResNetArcFace("Bottleneck", (2, 1, 1, 1))
    assert model.layer1[1].conv1.in_channels == 256  # the reference's `inplanes = planes` would give 64
    assert model.fc5.in_features == 2048 * 8 * 8


@pytest.mark.parametrize("kwargs,message", [
    ({"block": "ResNet"}, r"Unknown block 'ResNet'; expected one of \['BasicBlock', 'Bottleneck', 'IRBlock'\]"),
    ({"block": nn.Linear}, "nn.Module class with an `expansion`"),
    ({"layers": (2, 2, 2)}, r"layers must be four positive ints.*got \(2, 2, 2\)"),
    ({"layers": (2, 0, 2, 2)}, "layers must be four positive ints"),
    ({"layers": (2, 2.5, 2, 2)}, "layers must be four positive ints"),
])
def test_bad_arguments(kwargs, message):
    args = {"block": "IRBlock", "layers": (2, 2, 2, 2), **kwargs}
    with pytest.raises(ValueError, match=message):
        ResNetArcFace(**args)


@pytest.mark.parametrize("x,message", [
    (torch.rand(2, 3, 128, 128), r"got 3 channels.*RGB.*preprocess"),
    (torch.rand(2, 1, 112, 112), r"spatial size 112x112.*InsightFace.*128x128"),
    (torch.rand(1, 128, 128), r"3-D tensor.*unsqueeze\(0\)"),
    (torch.randint(0, 255, (2, 1, 128, 128), dtype=torch.uint8), r"dtype torch.uint8.*float"),
    ([[0.0]], r"got list"),
])
def test_bad_inputs_say_what_to_do(gfpgan_model, x, message):
    gfpgan_model.eval()
    with pytest.raises(ValueError, match=r"expects a float tensor of shape \(N, 1, 128, 128\)") as info:
        gfpgan_model(x)
    assert info.match(message)


def test_train_mode_batch_of_one_is_explained(gfpgan_model):
    gfpgan_model.train()
    with pytest.raises(ValueError, match=r"train mode needs a batch of at least 2.*BatchNorm1d.*model.eval\(\)"):
        gfpgan_model(torch.rand(1, 1, 128, 128))
    gfpgan_model.eval()


def test_repr_states_the_input(gfpgan_model):
    assert "input (N, 1, 128, 128)" in repr(gfpgan_model)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree(full_float32):  # TF32 off: full-precision float32 on both devices (restored after)
    model = randomize_(ResNetArcFace("IRBlock", (2, 2, 2, 2), use_se=True), seed=3).eval()
    x = torch.randn(4, 1, 128, 128)
    with torch.no_grad():
        cpu = model(x)
        cuda = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(cuda, cpu, rtol=1e-3, atol=1e-3)


# --- Configured networks: widths, input_size, embedding_dim -------------------------------------------------

def test_defaults_are_gfpgans_configuration():
    model = ResNetArcFace(use_se=False)
    assert (model.widths, model.input_size, model.embedding_dim) == ((64, 128, 256, 512), 128, 512)
    assert len(model.state_dict()) == 181 and sum(p.numel() for p in model.parameters()) == 25_627_081


def test_small_variant():
    model = resnet_arcface_small()
    assert (model.widths, model.input_size, model.embedding_dim) == ((16, 32, 64, 128), 32, 128)
    assert 200_000 <= sum(p.numel() for p in model.parameters()) <= 1_000_000
    assert model.conv1.out_channels == 16 and model.fc5.in_features == 128 * 2 * 2
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 128)
    assert "input (N, 1, 32, 32)" in repr(model) and "output (N, 128)" in repr(model)
    assert resnet_arcface_small(input_size=48).fc5.in_features == 128 * 3 * 3
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['width'\]"):
        resnet_arcface_small(width=8)


def test_configured_network_matches_functional_oracle():
    # A bottleneck-free IRBlock net at another width and size computes the same arithmetic as GFPGAN's.
    model = randomize_(ResNetArcFace("IRBlock", (1, 1, 1, 1), use_se=True, widths=(16, 32, 48, 64),
                                     input_size=48, embedding_dim=24), seed=4).eval()
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x), oracle.resnet_arcface(model.state_dict(), x, (1, 1, 1, 1)),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs,message", [
    ({"widths": (16, 32, 64)}, r"widths must be four positive ints.*got \(16, 32, 64\)"),
    ({"widths": (16, 0, 64, 128)}, "widths must be four positive ints"),
    ({"input_size": 40}, r"input_size must be a positive multiple of 16.*got 40"),
    ({"input_size": 0}, "input_size must be a positive multiple of 16"),
    ({"input_size": 32.0}, "input_size must be a positive multiple of 16"),
    ({"embedding_dim": 0}, r"embedding_dim must be a positive int.*got 0"),
])
def test_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNetArcFace(**kwargs)


def test_validate_input_follows_the_configured_size():
    model = resnet_arcface_small().eval()
    with pytest.raises(ValueError, match=r"shape \(N, 1, 32, 32\), got spatial size 128x128.*"
                                         r"to 32x32.*preprocess\(images, size=32\)"):
        model(torch.rand(1, 1, 128, 128))
    with pytest.raises(ValueError, match=r"\(N, 1, 64, 64\).*got 3 channels"):
        validate_input(torch.rand(2, 3, 64, 64), input_size=64)
    validate_input(torch.rand(2, 1, 64, 64), input_size=64)  # fits: no error


# --- The input configuration every network carries (pretrained_cfg) ----------------------------------------

def test_every_constructor_attaches_the_input_configuration():
    from resnet_arcface.nn.model import GFPGAN_CONFIG, LUMA, PretrainedCfg

    for model, size in ((ResNetArcFace(), 128), (resnet_arcface18(), 128), (resnet_arcface_small(), 32),
                        (resnet_arcface_small(input_size=64), 64)):
        assert model.pretrained_cfg == PretrainedCfg(input_size=size)
        assert model.pretrained_cfg.luma == LUMA and model.pretrained_cfg.value_range == (-1.0, 1.0)
    # resnet_arcface18 spells GFPGAN's configuration out; the registry's constant must say the same
    gfpgan = ResNetArcFace(**GFPGAN_CONFIG)
    reference = resnet_arcface18()
    assert (gfpgan.block, gfpgan.layers, gfpgan.use_se, gfpgan.widths, gfpgan.input_size, gfpgan.embedding_dim) == \
        (reference.block, reference.layers, reference.use_se, reference.widths, reference.input_size,
         reference.embedding_dim)


def test_the_configuration_changes_neither_state_dict_nor_arithmetic(gfpgan_model):
    assert len(gfpgan_model.state_dict()) == 181  # the cfg is a plain attribute, not a buffer
    import copy

    assert copy.deepcopy(gfpgan_model).pretrained_cfg == gfpgan_model.pretrained_cfg  # copies (folds) keep it
