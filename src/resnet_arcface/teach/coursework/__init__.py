"""Coursework tools: the student edition of the book and the grader.

* :mod:`resnet_arcface.teach.coursework.student` (``arcface-student``, ``make student``): the chapters without the
  cells tagged ``remove-student`` and with ``solution`` cells stubbed, in ``student/notebooks/``, and the HTML
  book built from them in ``student/_build/html``.
* :mod:`resnet_arcface.teach.coursework.grade` (``arcface-grade``, ``make grade SUBMISSIONS=dir``): runs completed
  learner notebooks, checks each exercise with :mod:`resnet_arcface.teach.exercises` and writes a CSV. It runs the
  learners' code (in their own kernels, which they control): read its docstring before using it.

The instructor's guide is ``book/instructors.md``. The submodules are imported on first use, so that
``python -m resnet_arcface.teach.coursework.grade`` does not import itself twice.
"""
import importlib

_EXPORTS = {
    "SolutionMarkerError": "student", "stub_notebook": "student",
    "stub_source": "student", "write_student_notebooks": "student", "build_student_html": "student",
    "grade_submissions": "grade",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
