"""A stored seeded IRBlock (with SE and downsample): if any arithmetic changes, the outputs change."""
from pathlib import Path

import torch

from make_regression_fixture import PATH, build


def test_irblock_outputs_match_the_stored_fixture():
    fixture = torch.load(PATH, weights_only=True)
    block = build()
    block.load_state_dict(fixture["state_dict"])
    block.eval()
    torch.testing.assert_close(block(fixture["x"]), fixture["eval_out"])
    block.train()
    torch.testing.assert_close(block(fixture["x"]), fixture["train_out"])
