"""Grade a folder of completed learner notebooks: one CSV row per learner and exercise.

Usage::

    arcface-grade SUBMISSIONS [--out grades/grades.csv] [--timeout 120] [--jobs 2] [--exercises conv3x3,se_block]
    make grade SUBMISSIONS=dir

``SUBMISSIONS`` holds ``alice.ipynb``, ``bob.ipynb``, ... (the learner is the file stem), or one folder per
learner (``alice/01_conv3x3.ipynb``, ``alice/04_se_block.ipynb``, ...; the learner is the folder name and an
exercise passes if it passes in any of that learner's notebooks). The CSV has the columns
``learner, exercise, passed, message`` with ``passed`` = ``true``/``false``; one row per learner and exercise of
``resnet_arcface.checks.EXERCISES`` (or ``--exercises``).

How one notebook is graded
--------------------------
1. A worker subprocess starts a fresh ``python3`` kernel (nbclient), in an empty temporary working folder and
   with an environment reduced to a short allow-list (no tokens or credentials from the grader's environment).
2. It executes the learner's code cells in order with ``allow_errors``: a failing cell does not stop the rest.
   The whole notebook gets ``--timeout`` seconds of wall-clock time (kernel start-up not counted).
3. It then sends one grader cell of its own. That cell loads the checks' engine (``ENGINE_MODULES``:
   ``resnet_arcface/check_structure.py``, then ``check_engine.py``) and then ``resnet_arcface/checks.py``
   afresh from their files. Each new module object is registered in ``sys.modules`` under its name while the
   later ones execute, so ``checks.py`` imports the fresh engine; then whatever was there before is put back.
   So patching the imported ``resnet_arcface.checks``, its ``EXERCISES`` or ``resnet_arcface.check_engine``
   changes nothing. The cell looks up each exercise's object by its fixed name in the kernel's namespace, runs
   the check on it with stdout captured and a per-check alarm (``--check-timeout``), and writes the results,
   together with a random nonce generated for this notebook, to a file in a private temporary folder. The
   worker reads that file and keeps it only if the nonce matches. The learner's printed output is never read:
   a notebook that prints ``check_conv3x3: ... ✓`` without passing is graded as failed.
4. Outcomes: object missing -> ``"MyIRBlock not defined"``; the check raises -> its message (e.g. the
   ``CheckFailed`` text); the notebook runs past the limit -> every exercise ``"timed out after N s"``; the
   kernel dies (``os._exit``, a segfault, running out of memory) -> every exercise ``"kernel died ..."``.
   The kernel is killed after each notebook. The parent also enforces a hard limit per worker and kills the
   worker and its kernel if it is exceeded, so one notebook can never stop the grading of the others.

What the grader trusts, and what it does not
--------------------------------------------
The grader needs a POSIX system (Linux, macOS): it uses process groups and ``SIGALRM``.

It RUNS THE LEARNERS' CODE with the grader's permissions. Run it in a throwaway container or VM, or at least as
an unprivileged user with no network and no secrets in its home folder or files. The environment allow-list
and the temporary working folder are hygiene, not a sandbox.

It trusts the installed ``resnet_arcface`` package and its checks, and it trusts nothing the notebook prints.
Its defences against a learner who games the checks are best-effort, because the checks run in the same
Python process as the learner's code. They stop: printing a fake success line, redefining or monkeypatching
the check functions, ``EXERCISES``, the ``resnet_arcface.checks`` module or the engine it imports
(``resnet_arcface.check_engine``, ``resnet_arcface.check_structure``), writing fake result lines (no
nonce), ``sys.exit``/``exit()`` and infinite loops. They do not stop code written to attack the grader
itself, e.g. patching ``torch`` (``torch.allclose = lambda *a, **k: True``) or the reference modules the
checks compare with, IPython input transformers or ``pre_run_cell`` hooks that rewrite the grader cell (and
so can read its nonce), or background threads that rewrite the results file. Nor can a behavioural check tell
a learner's own code from a call to the package's reference implementation
(``my_conv3x3 = resnet_arcface.conv3x3`` passes). Read the code of any notebook whose results matter.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

CHECKS_MODULE = "resnet_arcface.checks"
# The modules the checks import their comparison machinery from, in the order the grader cell loads them afresh
# before the checks module (each one's dependencies first).
ENGINE_MODULES = ("resnet_arcface.check_structure", "resnet_arcface.check_engine")
STARTUP_TIMEOUT = 60  # seconds for a kernel to start
HARD_LIMIT_SLACK = 30  # seconds on top of every other limit before the parent kills a worker
FIELDS = ("learner", "exercise", "passed", "message")
# The grader kernel's environment: only these variables are passed on from the grader's environment.
ENV_ALLOW = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX",
             "TMPDIR", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MPLCONFIGDIR",
             "XDG_CACHE_HOME", "TORCH_HOME", "LD_LIBRARY_PATH")

Result = Tuple[bool, str]

# The grader cell, filled in per notebook. It runs after the learner's cells, in their kernel. It uses only
# builtins and the standard library, and removes its own names from the learner's namespace when done.
GRADER_CELL = r'''
def __arcface_grade(nonce, results_path, engine, checks_name, checks_path, exercises, per_check):
    import contextlib, importlib.util, io, json, signal
    results = {}

    def dump():
        with open(results_path, "w", encoding="utf-8") as handle:
            json.dump({"nonce": nonce, "results": results}, handle)

    try:  # fresh modules from the installed files: the learner's patches to the imported ones do not apply
        import sys
        absent = object()
        # The engine first, then the checks; each stays in sys.modules under its name while the later ones
        # execute, so that their `from resnet_arcface.check_engine import ...` gets the fresh module (and
        # dataclasses, which look their module up while it executes, find it). Then the learner's entries
        # (or their absence) are put back.
        modules = [tuple(entry) for entry in engine] + [(checks_name, checks_path)]
        previous = {name: sys.modules.get(name, absent) for name, _ in modules}
        try:
            for name, path in modules:
                spec = importlib.util.spec_from_file_location(name, path)
                fresh = importlib.util.module_from_spec(spec)
                sys.modules[name] = fresh
                spec.loader.exec_module(fresh)
        finally:
            for name, module in previous.items():
                if module is absent:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
        table = dict(fresh.EXERCISES)  # the checks module, loaded last
    except BaseException as error:
        results["__grader__"] = [False, f"could not load the checks: {type(error).__name__}: {error}"]
        dump()
        return
    namespace = globals()

    class CheckTimeout(BaseException):
        pass

    class Capture(io.StringIO):
        encoding = "utf-8"  # so a check may print its tick mark

    def on_alarm(signum, frame):
        raise CheckTimeout()

    for exercise, name in exercises:
        if name not in namespace:
            results[exercise] = [False, f"{name} not defined"]
            dump()
            continue
        check = table[exercise][1]
        captured = Capture()
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, per_check)
        try:
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(io.StringIO()):
                check(namespace[name])
            signal.setitimer(signal.ITIMER_REAL, 0)
            lines = [l.strip() for l in captured.getvalue().splitlines() if l.strip()]
            ours = [l for l in lines if l.startswith(getattr(check, "__name__", "check"))]
            results[exercise] = [True, (ours or ["passed"])[-1]]
        except CheckTimeout:
            results[exercise] = [False, f"the check timed out after {per_check:g} s"]
        except BaseException as error:
            signal.setitimer(signal.ITIMER_REAL, 0)
            message = str(error).strip()
            if not isinstance(error, AssertionError) or not message:
                message = f"{type(error).__name__}: {message}" if message else type(error).__name__
            results[exercise] = [False, message]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        dump()


try:
    __arcface_grade(*__ARCFACE_GRADER_ARGUMENTS__)
finally:
    del __arcface_grade
'''


def _seconds(value: float) -> str:
    return f"{value:g}"


def load_exercises(checks: str = CHECKS_MODULE) -> Tuple[List[Tuple[str, str]], str, str]:
    """Read ``EXERCISES`` from the checks module (a dotted name or a ``.py`` file), in the grader's process.

    Returns:
        ``([(exercise_id, learner_object_name), ...], module_name, file_path)``.
    """
    import importlib
    import importlib.util

    if checks.endswith(".py"):
        path = str(Path(checks).resolve())
        name = "arcface_grader_checks"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise FileNotFoundError(f"arcface-grade: cannot load checks file {checks}.")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(checks)
        name, path = checks, str(Path(module.__file__).resolve())
    table = getattr(module, "EXERCISES", None)
    if not isinstance(table, dict) or not table:
        raise ValueError(f"arcface-grade: {checks} has no EXERCISES dict {{exercise_id: (name, check_fn)}}.")
    return [(ex, entry[0]) for ex, entry in table.items()], name, path


def engine_files() -> List[Tuple[str, str]]:
    """``[(module_name, file_path), ...]`` of ``ENGINE_MODULES``, which the grader cell loads before the checks."""
    import importlib.util

    files = []
    for name in ENGINE_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            raise ImportError(f"arcface-grade: cannot find the checks' engine module {name}.")
        files.append((name, str(Path(spec.origin).resolve())))
    return files


def kernel_env(jobs: int = 1) -> Dict[str, str]:
    """The learner kernel's environment: the allow-listed variables, a headless matplotlib, and a fair
    share of CPU threads when ``jobs`` notebooks run at once."""
    env = {k: v for k, v in os.environ.items() if k in ENV_ALLOW}
    env["MPLBACKEND"] = "Agg"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if "OMP_NUM_THREADS" not in env and jobs > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


# ---------------------------------------------------------------------------------------------------------------
# The worker: grades one notebook in its own process (``python .../grade.py --worker JOB``)
# ---------------------------------------------------------------------------------------------------------------

def _all(exercises: Sequence[Tuple[str, str]], message: str) -> Dict[str, Result]:
    return {ex: (False, message) for ex, _ in exercises}


def grade_notebook(job: dict) -> Dict[str, Result]:
    """Execute one learner notebook and grade it (runs inside the worker process). See the module docstring."""
    import nbformat
    from nbclient import NotebookClient

    exercises = [tuple(e) for e in job["exercises"]]
    timeout, per_check = float(job["timeout"]), float(job["check_timeout"])
    try:
        nb = nbformat.read(job["notebook"], as_version=4)
    except Exception as error:  # not JSON, not a notebook
        return _all(exercises, f"could not read the notebook: {type(error).__name__}: {error}")
    # Learner cells only; keep nothing of the learner's outputs.
    nb.cells = [c for c in nb.cells if c.cell_type == "code"]
    for cell in nb.cells:
        cell.outputs = []
    private = Path(tempfile.mkdtemp(prefix="arcface-grade-private-"))  # results file; not the kernel's cwd
    workdir = Path(tempfile.mkdtemp(prefix="arcface-grade-work-"))
    nonce = secrets.token_hex(16)
    results_path = private / f"{secrets.token_hex(8)}.json"
    deadline = [math.inf]  # the time limit of the cell being run: the notebook's, then the grader cell's

    def remaining(cell) -> int:
        return max(1, math.ceil(deadline[0] - time.monotonic()))

    client = NotebookClient(
        nb, kernel_name=job.get("kernel", "python3"), allow_errors=True, interrupt_on_timeout=False,
        shutdown_kernel="immediate", startup_timeout=STARTUP_TIMEOUT, record_timing=False,
        resources={"metadata": {"path": str(workdir)}}, timeout_func=remaining,
    )
    try:
        return _execute_and_check(client, nb, job, exercises, timeout, per_check, nonce, results_path, deadline)
    finally:
        _rmtree(workdir)
        _rmtree(private)


def _execute_and_check(client, nb, job, exercises, timeout: float, per_check: float, nonce: str,
                       results_path: Path, deadline: List[float]) -> Dict[str, Result]:
    """Run the learner's cells, then the grader cell, in one kernel; read the results once it is shut down."""
    import nbformat
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    where = "starting the kernel"
    try:
        with client.setup_kernel(cwd=client.resources["metadata"]["path"], env=job["env"]):
            pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
            if pid and job.get("pid_file"):
                Path(job["pid_file"]).write_text(str(pid))
            deadline[0] = time.monotonic() + timeout
            for index, cell in enumerate(list(nb.cells)):
                where = f"cell {index + 1} of {len(nb.cells)}"
                if time.monotonic() >= deadline[0]:
                    return _all(exercises, f"timed out after {_seconds(timeout)} s")
                client.execute_cell(cell, index)
            where = "the grader's checks"
            arguments = (nonce, str(results_path), [list(e) for e in job["engine"]], job["checks_name"],
                         job["checks_path"], [list(e) for e in exercises], per_check)
            grader = nbformat.v4.new_code_cell(GRADER_CELL.replace("__ARCFACE_GRADER_ARGUMENTS__", repr(arguments)))
            nb.cells.append(grader)
            deadline[0] = time.monotonic() + per_check * len(exercises) + 30
            client.execute_cell(grader, len(nb.cells) - 1)
        # The kernel is shut down here: nothing the learner left running can touch the results any more.
    except CellTimeoutError:
        if where == "the grader's checks":
            return _read_results(results_path, nonce, exercises, "the grader's checks timed out")
        return _all(exercises, f"timed out after {_seconds(timeout)} s")
    except DeadKernelError:
        return _all(exercises, f"the kernel died (crashed or exited) while running {where}")
    except Exception as error:  # the kernel failed to start, the zmq channels broke, ...
        return _all(exercises, f"grading failed while {where}: {type(error).__name__}: {error}")
    return _read_results(results_path, nonce, exercises, "the grader cell did not report a result")


def _read_results(path: Path, nonce: str, exercises, missing: str) -> Dict[str, Result]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _all(exercises, missing)
    if not isinstance(data, dict) or data.get("nonce") != nonce or not isinstance(data.get("results"), dict):
        return _all(exercises, "the grader's results were tampered with")
    reported = data["results"]
    if "__grader__" in reported:
        return _all(exercises, str(reported["__grader__"][1]))
    out = {}
    for ex, _ in exercises:
        entry = reported.get(ex)
        if isinstance(entry, list) and len(entry) == 2:
            out[ex] = (entry[0] is True, str(entry[1]))
        else:
            out[ex] = (False, missing)
    return out


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _worker_main(job_file: str) -> int:
    job = json.loads(Path(job_file).read_text())
    results = grade_notebook(job)
    Path(job["result_file"]).write_text(json.dumps({ex: list(r) for ex, r in results.items()}))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# The parent: one worker per notebook, a hard time limit on each, results merged per learner, the CSV
# ---------------------------------------------------------------------------------------------------------------

def find_submissions(folder: Path) -> Dict[str, List[Path]]:
    """``{learner: [notebooks]}``: ``folder/NAME.ipynb`` is learner NAME; ``folder/NAME/**/*.ipynb`` too."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"arcface-grade: submissions folder {folder} does not exist.")
    learners: Dict[str, List[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix == ".ipynb":
            learners.setdefault(entry.stem, []).append(entry)
        elif entry.is_dir():
            notebooks = sorted(p for p in entry.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
            if notebooks:
                learners.setdefault(entry.name, []).extend(notebooks)
    return learners


def _kill_group(pid: int) -> None:
    for sig in (signal.SIGKILL,):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError, OSError):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError, OSError):
                pass


def _hard_limit(timeout: float, check_timeout: float, n_exercises: int) -> float:
    """Seconds after which the parent kills a worker: every limit the worker enforces itself, plus slack."""
    return STARTUP_TIMEOUT + timeout + check_timeout * n_exercises + 30 + HARD_LIMIT_SLACK


def run_worker(notebook: Path, exercises, checks_name: str, checks_path: str, timeout: float,
               check_timeout: float, env: Dict[str, str], kernel: str = "python3",
               engine: Optional[Sequence[Tuple[str, str]]] = None) -> Dict[str, Result]:
    """Grade one notebook in a worker subprocess, killing it (and its kernel) past a hard time limit.

    ``engine`` is :func:`engine_files` unless given: the modules loaded afresh before the checks.
    """
    engine = engine_files() if engine is None else engine
    with tempfile.TemporaryDirectory(prefix="arcface-grade-job-") as tmp:
        job = {
            "notebook": str(notebook), "exercises": [list(e) for e in exercises], "timeout": timeout,
            "check_timeout": check_timeout, "engine": [list(e) for e in engine],
            "checks_name": checks_name, "checks_path": checks_path,
            "env": env, "kernel": kernel, "pid_file": str(Path(tmp) / "kernel.pid"),
            "result_file": str(Path(tmp) / "result.json"),
        }
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps(job))
        hard_limit = _hard_limit(timeout, check_timeout, len(exercises))
        # Run this file as a script: the worker needs nbclient, not torch (importing the package would load it).
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(job_file)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=hard_limit)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            log, _ = proc.communicate()
            return _all(exercises, f"timed out after {_seconds(timeout)} s")
        finally:
            # The kernel runs in its own session; make sure it is gone whatever happened to the worker.
            pid_file = Path(job["pid_file"])
            if pid_file.exists():
                try:
                    _kill_group(int(pid_file.read_text()))
                except ValueError:
                    pass
        try:
            raw = json.loads(Path(job["result_file"]).read_text())
            return {ex: (bool(raw[ex][0]), str(raw[ex][1])) for ex, _ in exercises}
        except (OSError, ValueError, KeyError):
            tail = (log or b"").decode(errors="replace").strip().splitlines()[-3:]
            return _all(exercises, "the grader's worker failed: " + " | ".join(tail))


def _rank(result: Result) -> int:
    passed, message = result
    if passed:
        return 3
    if message.endswith(" not defined"):
        return 0
    if message.startswith(("timed out", "the kernel died", "could not read", "grading failed")):
        return 1
    return 2  # defined but failed its check: the most useful message


def grade_submissions(folder: Path, out: Path, timeout: float = 120, check_timeout: float = 60, jobs: int = 1,
                      exercises: Optional[Sequence[str]] = None, checks: str = CHECKS_MODULE,
                      kernel: str = "python3", quiet: bool = False) -> List[Dict[str, str]]:
    """Grade every learner in ``folder`` and write the CSV to ``out``. Returns the rows written."""
    table, checks_name, checks_path = load_exercises(checks)
    engine = engine_files()
    if exercises:
        known = dict(table)
        unknown = [e for e in exercises if e not in known]
        if unknown:
            raise ValueError(f"arcface-grade: unknown exercise(s) {', '.join(unknown)}; "
                             f"expected some of {', '.join(known)}.")
        table = [(e, known[e]) for e in exercises]
    learners = find_submissions(folder)
    env = kernel_env(jobs)
    tasks = [(learner, nb) for learner, notebooks in learners.items() for nb in notebooks]
    per_notebook: Dict[Tuple[str, Path], Dict[str, Result]] = {}
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(run_worker, nb, table, checks_name, checks_path, timeout, check_timeout, env,
                               kernel, engine): (learner, nb) for learner, nb in tasks}
        for future in concurrent.futures.as_completed(futures):
            learner, nb = futures[future]
            per_notebook[(learner, nb)] = future.result()
            if not quiet:
                passed = sum(r[0] for r in per_notebook[(learner, nb)].values())
                print(f"arcface-grade: {nb}: {passed}/{len(table)} passed "
                      f"({time.monotonic() - start:.1f} s elapsed)", flush=True)
    rows = []
    for learner, notebooks in learners.items():
        for exercise, _ in table:
            best = max((per_notebook[(learner, nb)][exercise] for nb in notebooks), key=_rank)
            rows.append({"learner": learner, "exercise": exercise, "passed": "true" if best[0] else "false",
                         "message": best[1]})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    if not quiet:
        print(f"arcface-grade: {len(learners)} learner(s), {len(tasks)} notebook(s) graded in "
              f"{time.monotonic() - start:.1f} s; wrote {out}")
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"] and len(argv) == 2:
        return _worker_main(argv[1])
    parser = argparse.ArgumentParser(
        prog="arcface-grade",
        description="Grade completed learner notebooks with the resnet_arcface self-checks and write a CSV "
                    "(learner, exercise, passed, message). It RUNS the learners' code: use a throwaway "
                    "container or VM, or an unprivileged user without network or secrets.")
    parser.add_argument("submissions", type=Path,
                        help="folder of LEARNER.ipynb files, or of LEARNER/ folders of notebooks")
    parser.add_argument("--out", type=Path, default=Path("grades/grades.csv"),
                        help="CSV to write (default: grades/grades.csv)")
    parser.add_argument("--timeout", type=float, default=120,
                        help="wall-clock seconds for running one notebook's cells (default: 120)")
    parser.add_argument("--check-timeout", type=float, default=60,
                        help="seconds for each exercise's check (default: 60)")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks graded at once (default: 1)")
    parser.add_argument("--exercises", default="",
                        help="comma-separated exercise ids to grade (default: all in EXERCISES)")
    parser.add_argument("--checks", default=CHECKS_MODULE,
                        help=f"checks module or .py file with EXERCISES (default: {CHECKS_MODULE})")
    parser.add_argument("--kernel", default="python3", help="kernel to run the notebooks in (default: python3)")
    args = parser.parse_args(argv)
    exercises = [e.strip() for e in args.exercises.split(",") if e.strip()] or None
    try:
        grade_submissions(args.submissions, args.out, timeout=args.timeout, check_timeout=args.check_timeout,
                          jobs=args.jobs, exercises=exercises, checks=args.checks, kernel=args.kernel)
    except (FileNotFoundError, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
