"""Safe checkpoint loading: round trip, nesting, prefixes, mismatch reports, refusal to unpickle."""
import collections

import pytest
import torch

from resnet_arcface import CheckpointMismatchError, ResNetArcFace, load_checkpoint, read_state_dict, resnet_arcface18


@pytest.fixture(scope="module")
def trained_like():
    torch.manual_seed(0)
    model = resnet_arcface18()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def test_round_trip_gives_identical_outputs(tmp_path, trained_like):
    path = tmp_path / "arcface_resnet18.pth"
    torch.save(trained_like.state_dict(), path)
    loaded = resnet_arcface18(weights=path)
    assert not loaded.training  # loaded for inference, as GFPGAN uses it
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained_like(x), rtol=0, atol=0)


@pytest.mark.parametrize("wrap", ["params_ema", "params", "state_dict"])
def test_nested_and_prefixed_checkpoints(tmp_path, trained_like, wrap):
    sd = {f"module.{k}": v for k, v in trained_like.state_dict().items()}
    torch.save({wrap: sd, "iter": torch.tensor(5)}, tmp_path / "ckpt.pth")
    loaded = read_state_dict(tmp_path / "ckpt.pth")
    assert list(loaded) == list(trained_like.state_dict())


def test_mismatch_is_reported_in_plain_words(tmp_path, trained_like):
    torch.save(ResNetArcFace("IRBlock", (2, 2, 2, 2), use_se=True).state_dict(), tmp_path / "se.pth")
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(resnet_arcface18(), tmp_path / "se.pth")
    msg = str(info.value)
    assert "in the checkpoint but not the model" in msg and "layer1.0.se.fc.0.weight" in msg
    assert "use_se" in msg

    sd = trained_like.state_dict()
    sd.pop("bn5.running_var")
    sd["fc5.weight"] = torch.zeros(512, 100)
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(resnet_arcface18(), tmp_path / "broken.pth")
    msg = str(info.value)
    assert "1 key(s) missing from the checkpoint:\n  bn5.running_var" in msg
    assert "fc5.weight: model (512, 32768), checkpoint (512, 100)" in msg


class Payload:  # an arbitrary object: weights_only=True must refuse to rebuild it
    pass


def test_arbitrary_objects_are_never_unpickled(tmp_path):
    torch.save({"params": collections.OrderedDict(x=torch.zeros(1)), "evil": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state_dict(tmp_path / "evil.pth")


def test_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="does not hold a state_dict"):
        read_state_dict(tmp_path / "list.pth")


def test_missing_file_says_nothing_is_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        resnet_arcface18(weights=tmp_path / "nope.pth")
