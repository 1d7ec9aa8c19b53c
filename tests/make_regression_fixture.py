"""Regenerate tests/data/irblock_regression.pt: weights, input and output of a small seeded IRBlock.

Run only when the arithmetic is *meant* to change (it never should: it is the reference's):
    python tests/make_regression_fixture.py
"""
from pathlib import Path

import torch
from torch import nn

from resnet_arcface import IRBlock

PATH = Path(__file__).parent / "data" / "irblock_regression.pt"


def build() -> IRBlock:
    torch.manual_seed(0)
    ds = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
    return IRBlock(16, 32, stride=2, downsample=ds, use_se=True)


if __name__ == "__main__":
    block = build()
    torch.manual_seed(1)
    block.train()
    x = torch.randn(4, 16, 10, 10)
    train_out = block(x)  # train mode: also updates the BN running statistics
    block.eval()
    eval_out = block(x)
    torch.save({"state_dict": block.state_dict(), "x": x, "train_out": train_out.detach(),
                "eval_out": eval_out.detach()}, PATH)
    print(f"wrote {PATH}")
