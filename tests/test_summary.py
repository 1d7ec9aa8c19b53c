"""resnet_arcface.teach.summary.model_summary: torchinfo's table with exact, device-independent totals."""
import pytest
from torch import nn

from resnet_arcface import conv3x3
from resnet_arcface.teach.summary import model_summary

pytest.importorskip("torchinfo")


def test_totals_are_exact_and_the_model_is_untouched():
    stack = nn.Sequential(conv3x3(1, 64), conv3x3(64, 128, stride=2))
    stack.train()
    text = model_summary(stack, (1, 1, 128, 128))
    macs = 9 * 1 * 64 * 128 * 128 + 9 * 64 * 128 * 64 * 64
    assert f"Total mult-adds: {macs:,}" in text.splitlines()
    assert "Units." not in text and "Total params: 74,304" in text
    assert stack.training and next(stack.parameters()).device.type == "cpu"
