"""``model_summary``: torchinfo's layer table, with totals that read the same on every machine.

torchinfo 1.8 labels its multiply-add total with an enum's repr on Python 3.11+
("Total mult-adds (Units.MEGABYTES): 915.41", torchinfo issue #350), and what it prints there depends on
the Python version. A book that teaches multiply-adds prints the exact count instead. The summary runs on a
CPU copy of the model, so the caller's model stays where it is and the text does not depend on the device.
"""
import copy
import re
from typing import Sequence

from torch import nn

from .._optional import require

__all__ = ["model_summary"]


def model_summary(model: nn.Module, input_size: Sequence[int],
                  col_names: Sequence[str] = ("output_size", "num_params", "mult_adds"), depth: int = 3,
                  **kwargs) -> str:
    """torchinfo's summary of ``model`` on one input of ``input_size``, as text, with exact totals.

    Args:
        model: Any module; it is copied to the CPU and run once in eval mode (the original is untouched).
        input_size: Shape of the input, batch included, e.g. ``(1, 1, 128, 128)``.
        col_names: torchinfo's columns.
        depth: How many levels of nested modules to list.
        **kwargs: Passed on to ``torchinfo.summary`` (e.g. ``row_settings``).

    Returns:
        The table; its "Total mult-adds" line gives the exact count (``Total mult-adds: 915,406,848``).
    """
    summary = require("torchinfo", "book", "model_summary").summary  # the book's requirement, not the core's

    cpu_copy = copy.deepcopy(model).cpu()
    stats = summary(cpu_copy, input_size=tuple(input_size), col_names=tuple(col_names), depth=depth,
                    device="cpu", verbose=0, **kwargs)
    return re.sub(r"^Total mult-adds.*$", f"Total mult-adds: {stats.total_mult_adds:,}", str(stats),
                  flags=re.MULTILINE)
