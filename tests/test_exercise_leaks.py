"""No answer above its exercise: what the student edition shows a learner before each exercise gives nothing away.

Two kinds of exercise, two tests.

- **Implement it yourself** (every chapter that calls a ``check_*`` of
  :data:`resnet_arcface.teach.exercises.EXERCISES`):
  the student edition of the chapter (:func:`resnet_arcface.teach.coursework.student.stub_notebook`) is executed
  in-process, cell by cell, up to the exercise's stub; then every function and class those cells defined is handed
  to the exercise's check. None may pass: a learner must not be able to copy the answer from a cell above.
  Cells that fail (an earlier exercise's stub, its self-check, a cell tagged ``raises-exception``) are skipped, as a
  learner's kernel would go on; any other failing cell fails the test, since a chapter that breaks early would
  define nothing and pass vacuously. Nothing is skipped for speed: every chapter runs in about a minute at most,
  and only its cells above the exercise run.
- **Predict, then measure**: in the student edition with outputs kept (the HTML book), no code cell right under a
  predict prompt (before the next prose cell) shows an output; the measurement there is the learner's to run.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import types
from pathlib import Path
from typing import Dict, List, Tuple

import nbformat
import pytest

from resnet_arcface.teach.coursework.student import CLEAR_TAG, stub_notebook
from resnet_arcface.teach.exercises import EXERCISES

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
CHECKS = {check.__name__: (exercise, name, check) for exercise, (name, check) in EXERCISES.items()}
_CALL = re.compile(r"\b(check_\w+)\((\w+)\)")


def _exercises(nb: nbformat.NotebookNode) -> List[Tuple[int, str]]:
    """(index of the check's cell, exercise id) for every registered check a code cell calls on its object."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for check_name, obj in _CALL.findall(cell.source):
            if check_name in CHECKS and CHECKS[check_name][1] == obj:
                found.append((index, CHECKS[check_name][0]))
    return found


def _cases() -> List[Tuple[Path, str]]:
    cases = []
    for path in CHAPTERS:
        nb = stub_notebook(nbformat.read(path, as_version=4), name=path.name)
        cases += [(path, exercise) for _, exercise in _exercises(nb)]
    return cases


CASES = _cases()


def _run_cells(cells: List[nbformat.NotebookNode], module: types.ModuleType) -> List[str]:
    """Execute code cells in ``module``'s namespace, as a kernel would; a cell that raises is skipped.

    Returns one line per failing cell that should not fail: not a stub (tagged ``exercise``), not the self-check
    right after one, not tagged ``raises-exception``."""
    from IPython.core.inputtransformer2 import TransformerManager

    transform, unexpected, after_stub = TransformerManager().transform_cell, [], False
    for index, cell in enumerate(cells):
        tags = cell.metadata.get("tags", [])
        if cell.cell_type != "code" or "remove-cell" in tags:  # prose, or the Colab installer
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                exec(compile(transform(cell.source), f"<cell {index}>", "exec"), module.__dict__)
        except BaseException as error:  # go on, as a learner would
            if not ({"exercise", "raises-exception"} & set(tags) or after_stub):
                unexpected.append(f"cell {index}: {type(error).__name__}: {str(error)[:200]}")
        after_stub = "exercise" in tags
    return unexpected


def _defined(module: types.ModuleType) -> Dict[str, object]:
    """Every function and class the executed cells defined (not the ones they imported)."""
    return {name: obj for name, obj in vars(module).items()
            if isinstance(obj, (types.FunctionType, type)) and getattr(obj, "__module__", None) == module.__name__}


def test_every_registered_exercise_is_called_by_a_chapter():
    called = {exercise for _, exercise in CASES}
    assert called == set(EXERCISES), f"registered but called by no chapter: {set(EXERCISES) - called}"


@pytest.mark.parametrize("path, exercise", CASES, ids=[f"{p.stem[:2]}-{e}" for p, e in CASES])
def test_no_cell_above_an_exercise_passes_its_check(path, exercise, monkeypatch, full_float32):
    """The chapters turn TF32 off themselves (full_float32 puts it back afterwards)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    nb = stub_notebook(nbformat.read(path, as_version=4), name=path.name)
    check_index = next(i for i, e in _exercises(nb) if e == exercise)
    stub_index = max(i for i in range(check_index) if "exercise" in nb.cells[i].metadata.get("tags", []))
    module = types.ModuleType(f"student_{path.stem}")
    monkeypatch.chdir(NOTEBOOKS)  # chapters read files relative to their folder
    threads = torch.get_num_threads()
    try:
        broken = _run_cells(nb.cells[:stub_index], module)  # everything a learner sees above the exercise, run
    finally:
        torch.set_num_threads(threads)
        plt.close("all")
    assert not broken, (f"{path.name}: cells above exercise {exercise!r} fail in the student edition:\n"
                        + "\n".join(broken))
    check = EXERCISES[exercise][1]
    passing = []
    for name, obj in _defined(module).items():
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                check(obj)
        except BaseException:
            continue
        passing.append(name)
    assert not passing, (f"{path.name}: {', '.join(passing)}, defined above exercise {exercise!r} in the student "
                         f"edition, pass(es) {check.__name__}: the answer can be copied from the chapter")



def test_the_student_edition_clears_the_outputs_of_cells_tagged_clear_output_student():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print(1)", outputs=[nbformat.v4.new_output("stream", text="1\n")]),
        nbformat.v4.new_code_cell("print(2)", outputs=[nbformat.v4.new_output("stream", text="2\n")],
                                  metadata={"tags": [CLEAR_TAG]})])
    student = stub_notebook(nb, keep_outputs=True)
    assert [len(c.outputs) for c in student.cells] == [1, 0]
    assert student.cells[1].source == "print(2)"  # the code stays: the learner runs it


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem[:2] for p in CHAPTERS])
def test_no_output_right_under_a_predict_prompt(path):
    nb = stub_notebook(nbformat.read(path, as_version=4), name=path.name, keep_outputs=True)
    shown = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown" or not re.search(r"\bPredict\b", cell.source):
            continue
        for below in nb.cells[index + 1:]:
            if below.cell_type == "markdown":
                break
            if below.get("outputs"):
                shown.append(index)
    assert not shown, (f"{path.name}: the student edition shows an output right under the predict prompt(s) in "
                       f"cell(s) {shown}; tag the measuring cell '{CLEAR_TAG}' or move the measurement into the "
                       "solution")
