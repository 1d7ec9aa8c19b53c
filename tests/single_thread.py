"""A module-scoped autouse fixture that runs a test module on one CPU thread.

Import it into a test module (``from single_thread import one_thread  # noqa: F401``). The networks those
tests run are tiny and gain nothing from more threads, and on a busy machine extra threads spin-wait: two
threads on a loaded 2-core machine made a 0.1 s test take 12 s.
"""
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
