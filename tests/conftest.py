import pytest
import torch


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and BatchNorm buffer non-trivial random values, so that a swapped or
    missing BatchNorm, PReLU or bias changes the output (fresh BN is the identity, fresh PReLU 0.25)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("bn0.weight", "bn1.weight", "bn2.weight", "bn3.weight", "bn4.weight", "bn5.weight",
                                "downsample.1.weight", "prelu.weight", "fc.1.weight")):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.25)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (0.5 / max(1, t[0].numel()) ** 0.5 if t.dim() > 1 else 0.1))
    return module


@pytest.fixture
def seeded():
    torch.manual_seed(0)


# --- Torch's global settings: every test leaves them as it found them (TF32, threads, dtype, grad mode, ...) ---
# keep_global_flags (autouse) fails a test that leaks a change; full_float32 turns TF32 off for one test.
from global_flags import full_float32, keep_global_flags  # noqa: E402,F401


# --- The book: one build, one local server, one headless Chromium for the whole session ---------
# (owned by the book/browser tests; the fixtures live in tests/book_fixtures.py)
from book_fixtures import book_site, built_book, chromium  # noqa: E402,F401
