"""resnet_arcface.eval.readout: what verification compares (an earlier stage, the mirror image)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_arcface import preprocess, resnet_arcface_small
from resnet_arcface.eval.readout import READOUTS, FlipSum, StageFeatures
from resnet_arcface.eval.verify import embed
from single_thread import one_thread  # noqa: F401  (autouse: these tests run on one CPU thread)


class _Asymmetric(nn.Module):
    """Embedding = the left and right halves' mean pixels: a mirror image swaps them."""

    input_size = 8

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.scale * torch.stack([x[..., :4].mean((1, 2, 3)), x[..., 4:].mean((1, 2, 3)), x.mean((1, 2, 3))], 1)


def test_flip_sums_the_raw_embeddings_of_image_and_mirror():
    torch.manual_seed(0)
    model, x = _Asymmetric().train(), torch.rand(5, 1, 8, 8) * 2 - 1
    flip = FlipSum(model)
    torch.testing.assert_close(flip(x), model(x) + model(x.flip(-1)))
    assert flip.input_size == 8 and list(flip.parameters()) == list(model.parameters())
    images = torch.rand(5, 1, 8, 8)
    e = embed(flip, images)
    assert model.training  # embed restores the wrapped model's mode
    pre = images * 2 - 1  # what embed feeds the model at input_size 8
    torch.testing.assert_close(e, F.normalize(model(pre) + model(pre.flip(-1)), dim=1))
    assert not torch.allclose(e, embed(model, images))  # and it changes the embedding of this model


def test_stage_features_run_the_network_up_to_the_stage():
    torch.manual_seed(0)
    model = resnet_arcface_small().eval()
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    torch.testing.assert_close(StageFeatures(model, "embedding")(x), model(x))
    stem = model.maxpool(model.prelu(model.bn1(model.conv1(x))))
    maps = {"layer1": model.layer1(stem)}
    for before, name in zip(READOUTS[:3], READOUTS[1:4]):
        maps[name] = getattr(model, name)(maps[before])
    for name, expected in maps.items():
        torch.testing.assert_close(StageFeatures(model, name)(x), expected.flatten(1))
    assert StageFeatures(model, "layer3")(x).shape == (3, 64 * 4 * 4)  # 64 channels at 4 x 4 for 32 px
    assert StageFeatures(model, "layer4")(x).shape == (3, 128 * 2 * 2)


def test_stage_features_read_like_the_network():
    torch.manual_seed(0)
    model = resnet_arcface_small()
    reader = StageFeatures(model, "layer3")
    assert reader.input_size == 32 and list(reader.parameters()) == list(model.parameters())
    images = torch.rand(4, 1, 64, 64)  # embed resizes to the network's input, as for the network itself
    e = embed(FlipSum(reader), images)
    assert e.shape == (4, 1024) and model.training  # embed restores the mode of the wrapped network
    pre = preprocess(images, size=32)  # what embed feeds the network
    with torch.no_grad():
        expected = F.normalize(reader.eval()(pre) + reader(pre.flip(-1)), dim=1)
    torch.testing.assert_close(e, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=r"input_size|32"):  # the network's own input check still applies
        reader(torch.rand(2, 1, 16, 16))


def test_unknown_stage_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown stage 'layer5'; expected one of \['layer1'"):
        StageFeatures(resnet_arcface_small(), "layer5")
