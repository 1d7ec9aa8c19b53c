"""The student edition: the chapters with their answers removed and the learner's code stubbed, and the book.

Chapters mark answers with cell tags (CONTRIBUTING.md, "How a chapter is written"); nothing here parses markdown.
Cells tagged ``remove-student`` are removed by nbconvert's ``TagRemovePreprocessor``; in each code cell tagged
``solution`` every ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` region becomes ``raise NotImplementedError(...)``
(:func:`stub_source`) and the cell is retagged ``exercise``; cells tagged ``clear-output-student`` (the
measurement right under a predict-then-measure prompt) keep their code but lose their outputs, so the learner
predicts before running them. ``make student`` writes ``student/notebooks/`` (all
outputs cleared) and ``student/_build/html``, built from a stubbed copy of the sources (``student/_source``) with
sphinx-exercise's ``hide_solutions``, execution off (the pages keep the instructor notebooks' outputs, except the
stubs' and their self-checks') and no launch buttons (they would open the instructor notebooks).

Nothing leaks silently: a solution directive in a markdown cell not tagged ``remove-student`` or in a prose page,
a ``solution`` cell without (or with malformed) markers, and a stub that is not valid Python raise
:class:`SolutionMarkerError` naming the notebook (or page) and cell.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from ..._optional import require

require("nbformat", "book", "arcface-student")
require("nbconvert", "book", "arcface-student")
import nbformat  # noqa: E402
from nbconvert.preprocessors import ClearOutputPreprocessor, TagRemovePreprocessor

STUB_MESSAGE = "Exercise: write this part, then run the self-check below"
SOLUTION_TAG, REMOVE_TAG, CLEAR_TAG = "solution", "remove-student", "clear-output-student"
_BEGIN = re.compile(r"^(?P<indent>[ \t]*)#\s*BEGIN SOLUTION\b")
_END = re.compile(r"^[ \t]*#\s*END SOLUTION\b")
_DIRECTIVE = re.compile(r"^[ \t]*(`{3,}|:{3,})[ \t]*\{solution(-start|-end)?\}", re.M)


class SolutionMarkerError(ValueError):
    """An answer that the student edition would hand out: untagged solution directives or malformed markers."""


def stub_source(source: str, where: str = "cell", message: str = STUB_MESSAGE) -> str:
    """Replace every ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` region of ``source`` by a ``raise`` line.

    Args:
        source: The code of a cell tagged ``solution``.
        where: Names the cell in error messages, e.g. ``"notebooks/04_se_block.ipynb, cell 47"``.
        message: The ``NotImplementedError`` message.

    Raises:
        SolutionMarkerError: no region, a region never closed, an ``END`` without ``BEGIN``, nested regions,
            or a result that does not parse as (IPython) Python.
    """
    out: List[str] = []
    begin_line = regions = 0
    for lineno, line in enumerate(source.splitlines(), start=1):
        begin = _BEGIN.match(line)
        if begin and begin_line:
            raise SolutionMarkerError(f"{where}: '# BEGIN SOLUTION' at line {lineno} is nested inside the region "
                                      f"opened at line {begin_line}; close that one with '# END SOLUTION' first.")
        if begin:
            begin_line, regions = lineno, regions + 1
            out.append(f"{begin['indent']}raise NotImplementedError({json.dumps(message, ensure_ascii=False)})")
        elif _END.match(line):
            if not begin_line:
                raise SolutionMarkerError(f"{where}: '# END SOLUTION' at line {lineno} has no matching "
                                          "'# BEGIN SOLUTION' above it.")
            begin_line = 0
        elif not begin_line:
            out.append(line)
    if begin_line:
        raise SolutionMarkerError(f"{where}: '# BEGIN SOLUTION' at line {begin_line} is never closed by "
                                  "'# END SOLUTION'.")
    if not regions:
        raise SolutionMarkerError(f"{where}: the cell is tagged '{SOLUTION_TAG}' but has no '# BEGIN SOLUTION' / "
                                  "'# END SOLUTION' lines, so the student edition would show its whole answer. Wrap "
                                  "the lines a learner writes in them (CONTRIBUTING.md), or remove the tag.")
    stub = "\n".join(out)
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        compile(TransformerManager().transform_cell(stub), where, "exec")  # %magics and !shell lines -> Python
    except SyntaxError as err:
        raise SolutionMarkerError(f"{where}: after replacing the solution regions the cell is not valid Python "
                                  f"({err.msg}, line {err.lineno}). A region must cover whole statements; put the "
                                  "markers on their own lines.") from None
    return stub


def stub_notebook(nb: nbformat.NotebookNode, name: str = "notebook", keep_outputs: bool = False
                  ) -> nbformat.NotebookNode:
    """The student edition of ``nb`` (a copy): ``remove-student`` cells removed, ``solution`` cells stubbed.

    Args:
        nb: An instructor notebook.
        name: Names the notebook in error messages.
        keep_outputs: Keep the outputs of the cells that are neither stubs, nor the self-check right after one,
            nor tagged ``clear-output-student`` (the staged HTML book); otherwise every output is cleared.

    Raises:
        SolutionMarkerError: see :func:`stub_source`, or a solution directive in a cell not tagged
            ``remove-student``.
    """
    nb = copy.deepcopy(nb)
    after_stub = False
    for index, cell in enumerate(nb.cells):
        tags, where = cell.metadata.get("tags", []), f"{name}, cell {index}"
        if REMOVE_TAG in tags:
            continue
        if cell.cell_type == "markdown" and _DIRECTIVE.search(cell.source):
            raise SolutionMarkerError(
                f"{where}: this markdown cell holds a solution directive ({_DIRECTIVE.search(cell.source)[0].strip()}"
                f") but is not tagged '{REMOVE_TAG}', so the student edition would hand it out. Put the solution "
                f"(or the gate) in a cell of its own tagged '{REMOVE_TAG}' (CONTRIBUTING.md).")
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        if SOLUTION_TAG in tags:
            cell.source = stub_source(cell.source, where)
            cell.metadata["tags"] = ["exercise" if t == SOLUTION_TAG else t for t in tags]
        if SOLUTION_TAG in tags or after_stub or CLEAR_TAG in tags:  # no (instructor) output: stubs, their
            # self-checks, and measurements that would answer a predict prompt
            cell.outputs, cell.execution_count = [], None
        after_stub = SOLUTION_TAG in tags
    nb, _ = TagRemovePreprocessor(remove_cell_tags={REMOVE_TAG}).preprocess(nb, {})
    if not keep_outputs:
        nb, _ = ClearOutputPreprocessor().preprocess(nb, {})
    return nb


def write_student_notebooks(notebooks: Path, dest: Path) -> List[Path]:
    """Write the stubbed, output-free edition of every ``notebooks/*.ipynb`` (and copy other files) to ``dest``."""
    notebooks, dest = Path(notebooks), Path(dest)
    if not notebooks.is_dir():
        raise FileNotFoundError(f"arcface-student: notebook folder {notebooks} does not exist.")
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(notebooks, dest, ignore=shutil.ignore_patterns(".*", "__pycache__", "*.ipynb"))
    written = []
    for path in sorted(notebooks.glob("*.ipynb")):
        nbformat.write(stub_notebook(nbformat.read(path, as_version=4), name=str(path)), dest / path.name)
        written.append(dest / path.name)
    return written


def _ignore(out: Path):
    """copytree filter for staging the book: no build outputs, tests, hidden folders or ``out`` itself."""
    skip = {"_build", "tests", "grades", "test-artifacts", "__pycache__", "node_modules", "student"}

    def ignore(folder: str, names: Iterable[str]) -> List[str]:
        return [n for n in names if n.startswith(".") or n in skip or n.endswith(".egg-info")
                or (Path(folder) / n).resolve() == out]
    return ignore


def stage_student_book(book_root: Path, out: Path, execute: str = "auto") -> Tuple[Path, Path]:
    """Copy the book to ``out/_source`` with every notebook stubbed and a student ``_config.yml``.

    ``execute``: ``"auto"`` first runs (nbclient) the notebooks committed without outputs, ``"always"`` every
    notebook, ``"never"`` none. Returns ``(source_folder, config_path)`` for ``jupyter-book build``.
    """
    import yaml
    from nbclient import NotebookClient

    book_root, out = Path(book_root).resolve(), Path(out).resolve()
    source = out / "_source"
    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(book_root, source, ignore=_ignore(out))
    config = yaml.safe_load((book_root / "_config.yml").read_text()) or {}
    config["title"] = f"{config.get('title', 'Book')} (student edition)"
    config.setdefault("sphinx", {}).setdefault("config", {})["hide_solutions"] = True
    config.setdefault("execute", {})["execute_notebooks"] = "off"  # the stubs would raise
    config["launch_buttons"] = {"binderhub_url": "", "colab_url": "", "jupyterhub_url": "", "thebe": False}
    for path in sorted(source.rglob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        run = any(c.cell_type == "code" for c in nb.cells) and not any(c.get("outputs") for c in nb.cells)
        if execute == "always" or (execute == "auto" and run):
            NotebookClient(nb, timeout=int(config["execute"].get("timeout", 300)), kernel_name="python3",
                           resources={"metadata": {"path": str(path.parent)}}).execute()
        nbformat.write(stub_notebook(nb, name=str(path.relative_to(source)), keep_outputs=True), path)
    for path in sorted(source.rglob("*.md")):  # a page's download button serves its source: no solutions in it
        found = _DIRECTIVE.search(path.read_text(encoding="utf-8"))
        if found:
            line = path.read_text(encoding="utf-8")[:found.start()].count("\n") + 1
            raise SolutionMarkerError(f"{path.relative_to(source)}, line {line}: a prose page holds a written solution "
                                      f"({found[0].strip()}); move the exercise and its solution into a chapter "
                                      f"notebook, in a cell tagged '{REMOVE_TAG}'.")
    config_path = source / "_config.yml"
    config_path.write_text("# Generated by arcface-student: the student edition.\n" + yaml.safe_dump(config,
                                                                                                     sort_keys=False))
    return source, config_path


def build_student_html(book_root: Path, out: Path, jb_flags: Sequence[str] = (), execute: str = "auto") -> Path:
    """Build the HTML student edition into ``out/_build/html`` and return that folder."""
    source, config_path = stage_student_book(book_root, out, execute=execute)
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(source),
           "--config", str(config_path), "--toc", str(source / "_toc.yml"), "--path-output", str(Path(out).resolve()),
           *jb_flags]
    print("arcface-student:", " ".join(shlex.quote(c) for c in cmd[3:]), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise RuntimeError("arcface-student: jupyter-book build of the student edition failed; see above.")
    return Path(out).resolve() / "_build" / "html"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="arcface-student", description="Write the student edition: stubbed "
                                     "notebooks in OUT/notebooks and the book without solutions in OUT/_build/html.")
    parser.add_argument("--book-root", default=".", type=Path, help="folder holding _config.yml and _toc.yml")
    parser.add_argument("--notebooks", default=None, type=Path, help="chapters to stub (default: BOOK_ROOT/notebooks)")
    parser.add_argument("--out", default="student", type=Path, help="output folder (default: student)")
    parser.add_argument("--no-html", action="store_true", help="only write the stubbed notebooks")
    parser.add_argument("--execute", choices=("auto", "always", "never"), default="auto",
                        help="run instructor notebooks before staging the book (auto: those without outputs)")
    parser.add_argument("--jb-flags", default="", help='extra jupyter-book build flags, e.g. --jb-flags="-W -n"')
    args = parser.parse_args(argv)
    try:
        written = write_student_notebooks(args.notebooks or args.book_root / "notebooks", args.out / "notebooks")
        print(f"arcface-student: {len(written)} stubbed notebook(s) in {args.out / 'notebooks'}")
        if not args.no_html:
            html = build_student_html(args.book_root, args.out, shlex.split(args.jb_flags), args.execute)
            print(f"arcface-student: student book in {html} (open {html / 'index.html'})")
    except (SolutionMarkerError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
