"""resnet_arcface.learn.losses against formulas worked by hand, and GFPGAN's identity loss written out literally."""
import math

import pytest
import torch
import torch.nn.functional as F

from resnet_arcface import resnet_arcface_small
from resnet_arcface.learn.losses import MarginHead, arcface_logits, cosface_logits, cosine_logits, identity_loss
from single_thread import one_thread  # noqa: F401  (autouse: these tests run on one CPU thread)

S, M = 64.0, 0.5
TH, MM = math.cos(math.pi - M), math.sin(M) * M  # InsightFace's threshold and fallback margin


def test_cosine_logits_normalises_both_sides():
    e = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 10.0]])
    expected = torch.tensor([[0.6, 0.8], [0.0, -1.0]])  # cos of each embedding with each class direction
    torch.testing.assert_close(cosine_logits(e, w), expected)


def test_arcface_margin_on_target_only():
    theta = torch.tensor([[0.3, 1.0, 2.0], [1.2, 0.1, 2.5]])
    labels = torch.tensor([0, 1])
    out = arcface_logits(theta.cos(), labels, s=S, m=M)
    expected = S * theta.cos()
    expected[0, 0] = S * math.cos(0.3 + M)
    expected[1, 1] = S * math.cos(0.1 + M)
    torch.testing.assert_close(out, expected)


def test_arcface_past_pi_takes_the_threshold_branch():
    # theta = 2.9 > pi - m = 2.64: cos(theta + m) would rise again; the threshold form uses cos(theta) - m sin(m).
    cos = torch.tensor([[math.cos(2.9), 0.2]])
    out = arcface_logits(cos, torch.tensor([0]), s=S, m=M)
    assert cos[0, 0] < TH
    assert out[0, 0].item() == pytest.approx(S * (math.cos(2.9) - MM), rel=1e-6)
    # The target logit keeps decreasing with theta on both sides of the threshold.
    thetas = torch.linspace(0, math.pi, 2001)
    target = arcface_logits(thetas.cos()[:, None], torch.zeros(2001, dtype=torch.long), s=1.0, m=M)[:, 0]
    assert (target[1:] <= target[:-1] + 1e-6).all()


@pytest.mark.parametrize("fn", [arcface_logits, cosface_logits])
def test_gradients_finite_at_cos_plus_minus_one(fn):
    cos = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0])  # target cosines +1 and -1
    F.cross_entropy(fn(cos, labels), labels).backward()
    assert torch.isfinite(cos.grad).all()
    if fn is arcface_logits:
        out = fn(cos.detach(), labels)
        assert out[0, 0].item() == pytest.approx(S * math.cos(M), abs=1e-2)  # cos(0 + m)
        assert out[1, 0].item() == pytest.approx(S * (-1 - MM))  # theta = pi: the threshold branch


def test_arcface_gradient_matches_the_formula():
    # d/dc s cos(arccos(c) + m) = s (cos m + sin m * c / sqrt(1 - c^2)), away from +-1.
    c = torch.tensor([[0.3]], dtype=torch.float64, requires_grad=True)
    arcface_logits(c, torch.tensor([0]), s=S, m=M).sum().backward()
    expected = S * (math.cos(M) + math.sin(M) * 0.3 / math.sqrt(1 - 0.09))
    assert c.grad.item() == pytest.approx(expected)


def test_cosface_subtracts_margin_from_target():
    cos = torch.tensor([[0.5, 0.1], [0.2, -0.3]])
    out = cosface_logits(cos, torch.tensor([1, 1]), s=10.0, m=0.35)
    torch.testing.assert_close(out, torch.tensor([[5.0, -2.5], [2.0, -6.5]]))


def test_bad_labels_are_named():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        arcface_logits(torch.zeros(1, 2), torch.tensor([2]))
    with pytest.raises(ValueError, match="integer"):
        cosface_logits(torch.zeros(1, 2), torch.tensor([0.0]))


@pytest.mark.parametrize("loss", ["arcface", "cosface", "softmax"])
def test_margin_head(loss):
    torch.manual_seed(0)
    head = MarginHead(8, 5, loss=loss)
    torch.testing.assert_close(head.weight.norm(dim=1), torch.ones(5))
    e, y = torch.randn(4, 8), torch.tensor([0, 1, 4, 2])
    logits = head.logits(e, y)
    assert logits.shape == (4, 5)
    torch.testing.assert_close(head(e, y), F.cross_entropy(logits, y))
    if loss == "arcface":
        torch.testing.assert_close(logits, arcface_logits(cosine_logits(e, head.weight), y))
    elif loss == "cosface":
        torch.testing.assert_close(logits, cosface_logits(cosine_logits(e, head.weight), y))
    else:
        torch.testing.assert_close(logits, e @ head.weight.t())


def test_margin_head_refuses_unknown_loss_and_softmax_margin():
    with pytest.raises(ValueError, match="arcface"):
        MarginHead(8, 5, loss="sphereface")
    with pytest.raises(ValueError, match="no scale or margin"):
        MarginHead(8, 5, loss="softmax", m=0.5)


def _gfpgan_identity_loss(net, out, gt, weight=10.0, size=32):
    """GFPGAN's gray_resize_for_identity + optimize_parameters, written out as they are in gfpgan_model.py."""
    def gray_resize(x):
        g = (0.2989 * x[:, 0, :, :] + 0.5870 * x[:, 1, :, :] + 0.1140 * x[:, 2, :, :]).unsqueeze(1)
        return F.interpolate(g, (size, size), mode="bilinear", align_corners=False)

    identity_gt = net(gray_resize(gt)).detach()
    identity_out = net(gray_resize(out))
    return F.l1_loss(identity_out, identity_gt) * weight


def test_identity_loss_is_gfpgans():
    torch.manual_seed(0)
    net = resnet_arcface_small().eval()
    out = (torch.rand(2, 3, 48, 48) * 2 - 1).requires_grad_()
    gt = torch.rand(2, 3, 48, 48) * 2 - 1
    ours = identity_loss(net, out, gt)
    ref = _gfpgan_identity_loss(net, out, gt)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    (g_ours,) = torch.autograd.grad(ours, out)
    (g_ref,) = torch.autograd.grad(ref, out)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-6)
    assert identity_loss(net, gt, gt).item() == 0.0
    gray = out[:, :1].detach()
    assert identity_loss(net, gray, gray, weight=1.0).item() == 0.0  # (N, 1, H, W) accepted


def test_identity_loss_refuses_train_mode():
    net = resnet_arcface_small().train()
    x = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match="eval mode"):
        identity_loss(net, x, x)


def test_margin_head_logits_stay_float32_under_autocast():
    head = MarginHead(8, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head.logits(torch.randn(4, 8, dtype=torch.bfloat16), torch.tensor([0, 1, 2, 3]))
    assert logits.dtype == torch.float32  # s * cos in bfloat16 would round by up to 0.25
