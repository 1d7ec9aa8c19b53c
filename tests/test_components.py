"""conv3x3, SEBlock and the three residual blocks: names, shapes and arithmetic."""
import pytest
import torch
from torch import nn

import functional_oracle as oracle
from conftest import randomize_
from resnet_arcface import BasicBlock, Bottleneck, IRBlock, SEBlock, conv3x3


def downsample(inplanes, outplanes, stride):
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False), nn.BatchNorm2d(outplanes))


@pytest.mark.parametrize("stride", [1, 2])
def test_conv3x3_shape_and_config(stride):
    conv = conv3x3(8, 16, stride)
    assert (conv.kernel_size, conv.padding, conv.stride, conv.bias) == ((3, 3), (1, 1), (stride, stride), None)
    assert conv(torch.randn(2, 8, 15, 16)).shape == (2, 16, (15 - 1) // stride + 1, 8 if stride == 2 else 16)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_conv3x3_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="positive int"):
        conv3x3(bad, 4)


def test_se_block_names_gate_and_oracle():
    se = randomize_(SEBlock(64))
    assert list(se.state_dict()) == ["fc.0.weight", "fc.0.bias", "fc.1.weight", "fc.2.weight", "fc.2.bias"]
    assert [type(m) for m in se.fc] == [nn.Linear, nn.PReLU, nn.Linear, nn.Sigmoid]
    assert se.fc[0].out_features == 64 // 16
    x = torch.randn(3, 64, 5, 5)
    gate = se.gate(x)
    assert gate.shape == (3, 64, 1, 1) and bool(((gate > 0) & (gate < 1)).all())
    torch.testing.assert_close(se(x), x * gate)
    sd = {f"se.{k}": v for k, v in se.state_dict().items()}
    torch.testing.assert_close(se(x), oracle.se(sd, "se", x))


def test_se_block_rejects_too_few_channels():
    with pytest.raises(ValueError, match="channel // reduction"):
        SEBlock(8)


BLOCK_CASES = [  # (block, stride, with_downsample): every combination whose shapes can be added
    (block, stride, ds) for block in (BasicBlock, Bottleneck, IRBlock) for stride in (1, 2) for ds in (False, True)
    if ds or (stride == 1 and block.expansion == 1)
]


@pytest.mark.parametrize("block,stride,with_downsample", BLOCK_CASES)
def test_block_shapes(block, stride, with_downsample):
    inplanes, planes = 32, 32
    out_channels = planes * block.expansion
    ds = downsample(inplanes, out_channels, stride) if with_downsample else None
    kwargs = {"use_se": False} if block is IRBlock else {}
    out = block(inplanes, planes, stride, ds, **kwargs)(torch.randn(2, inplanes, 16, 16))
    assert out.shape == (2, out_channels, 16 // stride, 16 // stride)


@pytest.mark.parametrize("stride", [1, 2])
def test_ir_block_with_se_shapes(stride):
    block = IRBlock(32, 64, stride, downsample(32, 64, stride), use_se=True)
    assert block(torch.randn(2, 32, 16, 16)).shape == (2, 64, 16 // stride, 16 // stride)


def test_missing_downsample_fails():
    with pytest.raises(RuntimeError):
        BasicBlock(32, 64, stride=2)(torch.randn(1, 32, 8, 8))


def test_block_state_dict_names():
    assert [k for k in BasicBlock(8, 8).state_dict() if k.endswith("weight")] == [
        "conv1.weight", "bn1.weight", "conv2.weight", "bn2.weight"]
    assert [k for k in Bottleneck(16, 4).state_dict() if k.endswith("weight")] == [
        "conv1.weight", "bn1.weight", "conv2.weight", "bn2.weight", "conv3.weight", "bn3.weight"]
    ir = IRBlock(32, 64, 2, downsample(32, 64, 2), use_se=True)
    assert [k for k in ir.state_dict() if k.endswith("weight")] == [
        "bn0.weight", "conv1.weight", "bn1.weight", "prelu.weight", "conv2.weight", "bn2.weight",
        "downsample.0.weight", "downsample.1.weight", "se.fc.0.weight", "se.fc.1.weight", "se.fc.2.weight"]
    # conv1 keeps the width at stride 1; conv2 changes it and carries the stride.
    assert (ir.conv1.in_channels, ir.conv1.out_channels, ir.conv1.stride) == (32, 32, (1, 1))
    assert (ir.conv2.in_channels, ir.conv2.out_channels, ir.conv2.stride) == (32, 64, (2, 2))
    assert ir.prelu.weight.numel() == 1


@pytest.mark.parametrize("stride,use_se", [(1, False), (1, True), (2, False), (2, True)])
def test_ir_block_matches_functional_oracle(stride, use_se):
    inplanes, planes = 32, 32 if stride == 1 else 64
    ds = downsample(inplanes, planes, stride) if (stride != 1 or inplanes != planes) else None
    block = randomize_(IRBlock(inplanes, planes, stride, ds, use_se=use_se)).eval()
    x = torch.randn(2, inplanes, 12, 12)
    sd = {f"b.{k}": v for k, v in block.state_dict().items()}
    torch.testing.assert_close(block(x), oracle.ir_block(sd, "b", x, stride))


def test_basic_and_bottleneck_arithmetic():
    """Spot-check the ReLU blocks against a hand-written formula on the same weights."""
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)
    b = randomize_(BasicBlock(16, 16)).eval()
    expected = torch.relu(b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(x))))) + x)
    torch.testing.assert_close(b(x), expected)
    bt = randomize_(Bottleneck(16, 4)).eval()
    h = torch.relu(bt.bn2(bt.conv2(torch.relu(bt.bn1(bt.conv1(x))))))
    torch.testing.assert_close(bt(x), torch.relu(bt.bn3(bt.conv3(h)) + x))
