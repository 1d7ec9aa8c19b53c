"""The guard in tests/global_flags.py: a test that leaks a change to torch's global settings fails, the settings
are back for the next test, and a test that puts them back (or uses full_float32) passes."""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from global_flags import read_flags, restore_flags

TESTS = Path(__file__).resolve().parent

SUITE = textwrap.dedent('''
    import torch

    FIRST = None


    def test_records_the_start():
        global FIRST
        from global_flags import read_flags
        FIRST = read_flags()


    def test_leaks_tf32():
        torch.backends.cuda.matmul.allow_tf32 = not torch.backends.cuda.matmul.allow_tf32


    def test_leaks_cudnn_tf32():
        torch.backends.cudnn.allow_tf32 = not torch.backends.cudnn.allow_tf32


    def test_leaks_threads():
        torch.set_num_threads(2 if torch.get_num_threads() == 1 else 1)


    def test_leaks_grad_mode():
        torch.set_grad_enabled(False)


    def test_puts_threads_back():
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(threads + 1)
        finally:
            torch.set_num_threads(threads)


    def test_full_float32_turns_tf32_off(full_float32):
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "highest"


    def test_everything_is_back():
        from global_flags import read_flags
        assert read_flags() == FIRST
''')


def test_a_leaking_test_fails_and_the_next_one_finds_the_settings_restored(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # this folder is the rootdir: not the project's options
    (tmp_path / "conftest.py").write_text("from global_flags import full_float32, keep_global_flags  # noqa: F401\n")
    (tmp_path / "test_suite.py").write_text(SUITE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", "test_suite.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    report = done.stdout
    failed = set(re.findall(r"^(?:FAILED|ERROR) \S*::(\w+)", report, re.MULTILINE))
    passed = set(re.findall(r"^PASSED \S*::(\w+)", report, re.MULTILINE))
    assert failed == {"test_leaks_tf32", "test_leaks_cudnn_tf32", "test_leaks_threads", "test_leaks_grad_mode"}, report
    assert passed == {"test_records_the_start", "test_puts_threads_back", "test_full_float32_turns_tf32_off",
                      "test_everything_is_back", *failed}, report  # a teardown error follows a passed call
    assert "torch.backends.cuda.matmul.allow_tf32: " in report and "they are restored now" in report


def test_restore_flags_sets_back_what_changed_and_names_it():
    before = read_flags()
    try:
        torch.backends.cudnn.allow_tf32 = not before["torch.backends.cudnn.allow_tf32"]
        torch.set_float32_matmul_precision("medium" if before["torch.get_float32_matmul_precision()"] != "medium"
                                           else "highest")
        changed = restore_flags(before)
        assert set(changed) >= {"torch.backends.cudnn.allow_tf32", "torch.get_float32_matmul_precision()"}
        assert read_flags() == before
    finally:
        restore_flags(before)
