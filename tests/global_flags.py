"""Torch's process-wide settings, and an autouse fixture (imported by conftest.py) that keeps tests from leaking them.

A test that turns TF32 off, or changes the thread count, the default dtype or the grad mode, and does not
put it back changes every test after it: a precision bug could then pass or fail depending on the order the
tests run in. :func:`keep_global_flags` records the settings before each test and, if the test left any
changed, restores them and fails the test, naming each flag with its value before and after.

A test that needs a setting changes it *and puts it back*: with the :func:`full_float32` fixture (TF32 off),
a ``try``/``finally``, or a module-scoped fixture such as ``single_thread.one_thread``, which runs outside each
test's window and restores the thread count when the module ends.
"""
from typing import Any, Callable, Dict, Tuple

import pytest
import torch


def _set_matmul_tf32(value: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = value


def _set_cudnn_tf32(value: bool) -> None:
    torch.backends.cudnn.allow_tf32 = value


def _set_cudnn_benchmark(value: bool) -> None:
    torch.backends.cudnn.benchmark = value


def _set_cudnn_deterministic(value: bool) -> None:
    torch.backends.cudnn.deterministic = value


#: name -> (read it, set it back). The float32 matmul precision comes before matmul TF32: setting the precision
#: also sets the TF32 flag, so restoring in this order leaves both as they were.
FLAGS: Dict[str, Tuple[Callable[[], Any], Callable[[Any], None]]] = {
    "torch.get_float32_matmul_precision()": (torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
    "torch.backends.cuda.matmul.allow_tf32": (lambda: torch.backends.cuda.matmul.allow_tf32, _set_matmul_tf32),
    "torch.backends.cudnn.allow_tf32": (lambda: torch.backends.cudnn.allow_tf32, _set_cudnn_tf32),
    "torch.backends.cudnn.benchmark": (lambda: torch.backends.cudnn.benchmark, _set_cudnn_benchmark),
    "torch.backends.cudnn.deterministic": (lambda: torch.backends.cudnn.deterministic, _set_cudnn_deterministic),
    "torch.are_deterministic_algorithms_enabled()": (
        lambda: (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
        lambda value: torch.use_deterministic_algorithms(value[0], warn_only=value[1])),
    "torch.get_default_dtype()": (torch.get_default_dtype, torch.set_default_dtype),
    "torch.is_grad_enabled()": (torch.is_grad_enabled, torch.set_grad_enabled),
    "torch.get_num_threads()": (torch.get_num_threads, torch.set_num_threads),
}


def read_flags() -> Dict[str, Any]:
    """Every setting in :data:`FLAGS`, by name."""
    return {name: read() for name, (read, _) in FLAGS.items()}


def restore_flags(before: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """Set back every setting that differs from ``before``; returns ``{name: (before, after)}`` of those."""
    after = read_flags()
    changed = {name: (before[name], after[name]) for name in FLAGS if after[name] != before[name]}
    for name in FLAGS:  # in FLAGS's order (see there)
        if name in changed:
            FLAGS[name][1](before[name])
    return changed


@pytest.fixture(autouse=True)
def keep_global_flags():
    """Fail a test that leaves torch's global settings changed (after setting them back for the next test)."""
    before = read_flags()
    yield
    changed = restore_flags(before)
    if changed:
        lines = "; ".join(f"{name}: {old!r} -> {new!r}" for name, (old, new) in changed.items())
        pytest.fail(f"the test left torch's global settings changed ({lines}); they are restored now. Change them "
                    f"and put them back: the full_float32 fixture, try/finally, or a module-scoped fixture.",
                    pytrace=False)


@pytest.fixture
def full_float32():
    """TF32 off for the test (full float32 matmuls and convolutions on CUDA), and back as it was afterwards."""
    before = read_flags()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    restore_flags(before)
