"""Grade a folder of completed learner notebooks: one CSV row (``learner, exercise, passed, message``) per learner
and exercise. ``arcface-grade SUBMISSIONS [--out grades/grades.csv] [--timeout 120] [--jobs 2] [--exercises
conv3x3,se_block]`` (or ``make grade SUBMISSIONS=dir``); ``SUBMISSIONS`` holds ``alice.ipynb``, ... or one folder
of notebooks per learner (an exercise passes if it passes in any). The instructors' guide: ``book/instructors.md``.

A worker subprocess per notebook runs a fresh kernel (nbclient) in an empty temporary folder: the learner's code
cells (errors allowed, ``--timeout`` seconds in all), then one grader cell that runs each exercise's check from
``resnet_arcface.teach.exercises`` on the object of its fixed name (``--check-timeout`` seconds per exercise) and displays
each result as ``application/vnd.arcface-grade+json``; only that cell's outputs are read. The parent kills a
worker, and its kernel, that outlives every limit. So a notebook that crashes a cell, kills its kernel, hangs,
defines the wrong thing or nothing, or prints a success line or a fake result is graded correctly. It does NOT
defend against a learner who attacks the grader (the checks run in the learner's kernel, after their code), and
it RUNS THEIR CODE with your permissions: grade in a throwaway container without network or secrets. POSIX only.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

CHECKS_MODULE = "resnet_arcface.teach.exercises"  # the module whose EXERCISES the grader runs, unless --checks
MIME = "application/vnd.arcface-grade+json"
STARTUP_TIMEOUT = 60  # seconds for a kernel to start
FIELDS = ("learner", "exercise", "passed", "message")
Result = Tuple[bool, str]

# Runs after the learner's cells, in their kernel; displays one result per exercise as soon as it is known.
GRADER_CELL = '''
def __arcface_grade(checks_module, exercises):
    import contextlib, importlib, io
    from IPython.display import display

    table = importlib.import_module(checks_module).EXERCISES
    for exercise, name in exercises:
        if name not in globals():
            result = [False, f"{name} not defined"]
        else:
            check, out = table[exercise][1], type("Capture", (io.StringIO,), {"encoding": "utf-8"})()  # for a tick
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                    check(globals()[name])
                lines = [l.strip() for l in out.getvalue().splitlines() if l.strip().startswith(check.__name__)]
                result = [True, (lines or ["passed"])[-1]]
            except BaseException as error:
                message = str(error).strip()
                result = [False, message if isinstance(error, AssertionError) and message else
                          ": ".join(filter(None, [type(error).__name__, message]))]
        display({"%s": {"exercise": exercise, "result": result}}, raw=True)

__arcface_grade(%r, %r)
'''


def _all(exercises: Sequence[Tuple[str, str]], message: str) -> Dict[str, Result]:
    return {ex: (False, message) for ex, _ in exercises}  # every exercise of the notebook fails with one message


def grade_notebook(path: Path, exercises: Sequence[Tuple[str, str]], timeout: float, check_timeout: float,
                   checks: str = CHECKS_MODULE, kernel: str = "python3", pid_file: Optional[Path] = None
                   ) -> Dict[str, Result]:
    """Run one learner notebook and then the checks in one kernel (inside the worker). See the module docstring."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as error:  # not JSON, not a notebook
        return _all(exercises, f"could not read the notebook: {type(error).__name__}: {error}")
    nb.cells = [nbformat.from_dict({**c, "outputs": []}) for c in nb.cells if c.cell_type == "code"]  # no outputs
    deadline = [time.monotonic() + STARTUP_TIMEOUT + timeout]
    grader = nbformat.v4.new_code_cell(GRADER_CELL % (MIME, checks, [list(e) for e in exercises]))
    results: Dict[str, Result] = {}
    timed_out, where = False, "starting the kernel"
    with tempfile.TemporaryDirectory(prefix="arcface-grade-") as work:
        env = dict(os.environ, MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
        client = NotebookClient(nb, kernel_name=kernel, allow_errors=True, interrupt_on_timeout=False,
                                shutdown_kernel="immediate", startup_timeout=STARTUP_TIMEOUT, record_timing=False,
                                timeout_func=lambda cell: max(1, int(deadline[0] - time.monotonic())),
                                resources={"metadata": {"path": work}})
        try:
            with client.setup_kernel(cwd=work, env=env):
                pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
                if pid and pid_file:
                    Path(pid_file).write_text(str(pid))
                deadline[0] = time.monotonic() + timeout
                for index, cell in enumerate(list(nb.cells)):
                    where = f"cell {index + 1} of {len(nb.cells)}"
                    if time.monotonic() > deadline[0]:
                        return _all(exercises, f"timed out after {timeout:g} s")
                    client.execute_cell(cell, index)
                where = "the checks"
                nb.cells.append(grader)
                deadline[0] = time.monotonic() + check_timeout * len(exercises)
                client.execute_cell(grader, len(nb.cells) - 1)
        except CellTimeoutError:
            timed_out = where == "the checks"
            if not timed_out:
                return _all(exercises, f"timed out after {timeout:g} s")
        except DeadKernelError:
            return _all(exercises, f"the kernel died (crashed or exited) while running {where}")
        except Exception as error:  # the kernel failed to start, the zmq channels broke, ...
            return _all(exercises, f"grading failed while {where}: {type(error).__name__}: {error}")
    for output in grader.outputs:
        entry = output.get("data", {}).get(MIME) if output.get("output_type") == "display_data" else None
        if isinstance(entry, dict) and isinstance(entry.get("result"), list) and len(entry["result"]) == 2:
            results[str(entry.get("exercise"))] = (entry["result"][0] is True, str(entry["result"][1]))
    errors = [f"{o.ename}: {o.evalue}" for o in grader.outputs if o.get("output_type") == "error"] + ["no result"]
    missing = f"the checks timed out ({check_timeout:g} s per exercise)" if timed_out else \
        f"the grader's cell failed: {errors[0]}"
    return {ex: results.get(ex, (False, missing)) for ex, _ in exercises}


def find_submissions(folder: Path) -> Dict[str, List[Path]]:
    """``{learner: [notebooks]}``: ``folder/NAME.ipynb`` is learner NAME; ``folder/NAME/**/*.ipynb`` too."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"arcface-grade: submissions folder {folder} does not exist.")
    learners: Dict[str, List[Path]] = {}
    for entry in (e for e in sorted(folder.iterdir()) if not e.name.startswith(".")):
        notebooks = [entry] if entry.is_file() and entry.suffix == ".ipynb" else sorted(
            p for p in entry.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts) if entry.is_dir() else []
        if notebooks:
            learners.setdefault(entry.stem if entry.is_file() else entry.name, []).extend(notebooks)
    return learners


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            return kill(pid, signal.SIGKILL)
        except OSError:
            pass


def hard_limit(timeout: float, check_timeout: float, n_exercises: int) -> float:
    """Seconds after which the parent kills a worker: every limit the worker enforces itself, plus slack."""
    return STARTUP_TIMEOUT + timeout + check_timeout * n_exercises + 30


def run_worker(notebook: Path, exercises: Sequence[Tuple[str, str]], timeout: float, check_timeout: float,
               checks: str = CHECKS_MODULE, kernel: str = "python3") -> Dict[str, Result]:
    """Grade one notebook in a worker subprocess; kill it and its kernel past :func:`hard_limit`."""
    with tempfile.TemporaryDirectory(prefix="arcface-grade-job-") as tmp:
        pid_file, result_file = Path(tmp) / "kernel.pid", Path(tmp) / "result.json"
        job = [str(notebook), [list(e) for e in exercises], timeout, check_timeout, checks, kernel, str(pid_file),
               str(result_file)]
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=hard_limit(timeout, check_timeout, len(exercises)))
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            log = proc.communicate()[0]
            return _all(exercises, f"timed out after {timeout:g} s")
        finally:  # the kernel runs in a session of its own: make sure it is gone whatever the worker did
            if pid_file.exists() and pid_file.read_text().isdigit():
                _kill_group(int(pid_file.read_text()))
        try:
            raw = json.loads(result_file.read_text())
            return {ex: (bool(raw[ex][0]), str(raw[ex][1])) for ex, _ in exercises}
        except (OSError, ValueError, KeyError):
            tail = (log or b"").decode(errors="replace").strip().splitlines()[-3:]
            return _all(exercises, "the grader's worker failed: " + " | ".join(tail))


def _rank(result: Result) -> int:
    """Which of a learner's notebooks' results to report: a pass, then a check's message, then the rest."""
    passed, message = result
    return 3 if passed else 0 if message.endswith(" not defined") else 1 if message.startswith(
        ("timed out", "the kernel died", "could not read", "grading failed")) else 2


def grade_submissions(folder: Path, out: Path, timeout: float = 120, check_timeout: float = 60, jobs: int = 1,
                      exercises: Optional[Sequence[str]] = None, checks: str = CHECKS_MODULE,
                      kernel: str = "python3", quiet: bool = False) -> List[Dict[str, str]]:
    """Grade every learner in ``folder`` and write the CSV to ``out``. Returns the rows written."""
    if checks.endswith(".py"):  # a file of your own: importable by the grader and by the kernels
        folder = str(Path(checks).resolve().parent)
        sys.path.insert(0, folder)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [folder, os.environ.get("PYTHONPATH")]))
        checks = Path(checks).stem
    known = {ex: entry[0] for ex, entry in importlib.import_module(checks).EXERCISES.items()}
    unknown = [e for e in exercises or () if e not in known]
    if unknown:
        raise ValueError(f"arcface-grade: unknown exercise(s) {', '.join(unknown)}; expected some of "
                         f"{', '.join(known)}.")
    table = [(e, known[e]) for e in (exercises or known)]
    learners = find_submissions(folder)
    tasks = [(learner, nb) for learner, notebooks in learners.items() for nb in notebooks]
    start, done = time.monotonic(), {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(run_worker, task[1], table, timeout, check_timeout, checks, kernel): task
                   for task in tasks}
        for future in concurrent.futures.as_completed(futures):
            done[futures[future]] = future.result()
            if not quiet:
                print(f"arcface-grade: {futures[future][1]}: {sum(r[0] for r in done[futures[future]].values())}/"
                      f"{len(table)} passed ({time.monotonic() - start:.1f} s elapsed)", flush=True)
    best = {(learner, ex): max((done[(learner, nb)][ex] for nb in notebooks), key=_rank)
            for learner, notebooks in learners.items() for ex, _ in table}
    rows = [{"learner": learner, "exercise": ex, "passed": str(passed).lower(), "message": message}
            for (learner, ex), (passed, message) in best.items()]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with Path(out).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    if not quiet:
        print(f"arcface-grade: {len(learners)} learner(s), {len(tasks)} notebook(s) graded in "
              f"{time.monotonic() - start:.1f} s; wrote {out}")
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        notebook, exercises, timeout, check_timeout, checks, kernel, pid_file, result_file = json.loads(argv[1])
        results = grade_notebook(Path(notebook), [tuple(e) for e in exercises], timeout, check_timeout, checks,
                                 kernel, Path(pid_file))
        Path(result_file).write_text(json.dumps({ex: list(r) for ex, r in results.items()}))
        return 0
    parser = argparse.ArgumentParser(prog="arcface-grade", description="Grade learner notebooks with the "
                                     "self-checks into a CSV. It RUNS their code: use a throwaway container.")
    parser.add_argument("submissions", type=Path, help="folder of LEARNER.ipynb files, or of LEARNER/ folders")
    parser.add_argument("--out", type=Path, default=Path("grades/grades.csv"), help="CSV to write")
    parser.add_argument("--timeout", type=float, default=120, help="seconds for one notebook's cells (default 120)")
    parser.add_argument("--check-timeout", type=float, default=60, help="seconds per exercise's check (default 60)")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks graded at once (default 1)")
    parser.add_argument("--exercises", default="", help="comma-separated exercise ids (default: all)")
    parser.add_argument("--checks", default=CHECKS_MODULE, help="module name or .py file with EXERCISES")
    parser.add_argument("--kernel", default="python3", help="kernel to run the notebooks in")
    args = parser.parse_args(argv)
    try:
        grade_submissions(args.submissions, args.out, args.timeout, args.check_timeout, args.jobs,
                          [e.strip() for e in args.exercises.split(",") if e.strip()] or None, args.checks,
                          args.kernel)
    except (FileNotFoundError, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
