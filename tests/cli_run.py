"""Run a command's ``main(argv)`` in-process, as the shell would: its exit status and what it printed."""
from typing import Callable, Sequence, Tuple

import torch


def run_main(main: Callable[[Sequence[str]], int], argv: Sequence[object], capsys) -> Tuple[int, str, str]:
    """``(exit status, stdout, stderr)`` of ``main([str(a) for a in argv])``, whether it returns or exits."""
    threads = torch.get_num_threads()
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exc:
        status = exc.code
    finally:
        torch.set_num_threads(threads)  # a command sets the process's thread count (--threads): put it back
    out, err = capsys.readouterr()
    return status, out, err
