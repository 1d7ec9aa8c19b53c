"""The student edition: chapter notebooks with the learner's code stubbed out, and the book without solutions.

Two outputs, both written under ``student/`` by default (``make student``; the folder is git-ignored):

``student/notebooks/NN_name.ipynb``
    What a learner works in. Every code cell tagged ``solution`` keeps the code outside its
    ``# BEGIN SOLUTION`` / ``# END SOLUTION`` regions (class and ``def`` lines, docstrings, ``super().__init__()``)
    and has each region replaced by one line, at the region's indentation::

        raise NotImplementedError("Exercise: write this part, then run the self-check below")

    Written solutions are deleted: every ``{solution}`` directive, and every gated solution
    (``{solution-start}`` ... ``{solution-end}``, which may span cells) with all its prose and code, *except*
    the code cells tagged ``solution``: those stay, stubbed, after a short "your turn" note. All outputs and
    execution counts are cleared.

``student/_build/html``
    The HTML book, built by ``jupyter-book build`` from a staged copy of the sources (``student/_source``)
    with a generated configuration that sets sphinx-exercise's ``hide_solutions: true``, turns execution off
    and drops the launch buttons. The staged notebooks are the instructor notebooks stubbed as above but
    *keeping* their committed outputs (only the stubbed cells and the self-check cells lose theirs), so the
    figures and shapes are those of the real code. Why a staged copy rather than ``hide_solutions`` alone on
    the instructor sources: sphinx-exercise 1.2.1's ``hide_solutions`` drops a gated ``{solution-start}`` but
    not what follows it, so the solution code would stay on the page, and its orphaned ``solution_end_node``
    has no HTML visitor (the build fails with ``NotImplementedError: ... unknown node type:
    solution_end_node``). The page's download button, its ``_sources`` copy and the search index would also
    carry the full solutions. The prose pages are staged without their solutions too; ``hide_solutions``
    stays on as a second line of defence.

The instructor edition is the normal ``make book`` (``_build/html``).

A cell tagged ``solution`` without markers, an unclosed or nested region, or a stub that is no longer valid
Python raises :class:`SolutionMarkerError` naming the notebook and cell, so a chapter can never leak its answer
silently.
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

import nbformat
from nbconvert.preprocessors import Preprocessor
from traitlets import Bool, Unicode

STUB_MESSAGE = "Exercise: write this part, then run the self-check below"
SOLUTION_TAG = "solution"
YOUR_TURN = (
    "**Your turn.** Fill in the cell below: replace each `raise NotImplementedError(...)` with your code, "
    "then run the self-check after it."
)

_BEGIN = re.compile(r"^(?P<indent>[ \t]*)#\s*BEGIN SOLUTION\b")
_END = re.compile(r"^[ \t]*#\s*END SOLUTION\b")
# A fence opening line: ```lang, ~~~, ```{directive} args or :::{directive} args (fence length >= 3).
_FENCE = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,}|:{3,})[ \t]*(?P<info>\S*)")
_SOLUTION_DIRECTIVES = ("{solution}", "{solution-start}", "{solution-end}")
_LITERAL_DIRECTIVES = ("{code}", "{code-block}", "{code-cell}", "{sourcecode}", "{literalinclude}")
# A cell whose output reports a self-check (e.g. ``check_se_block(MySEBlock)``).
_CHECK_CALL = re.compile(r"\bcheck_\w+\s*\(")


class SolutionMarkerError(ValueError):
    """A ``solution`` cell whose ``# BEGIN SOLUTION`` / ``# END SOLUTION`` markers are missing or malformed."""


def stub_source(source: str, where: str = "cell", message: str = STUB_MESSAGE) -> str:
    """Replace every ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` region of ``source`` by a ``raise`` line.

    Args:
        source: The code of a cell tagged ``solution``.
        where: Names the cell in error messages, e.g. ``"notebooks/04_se_block.ipynb, cell 47"``.
        message: The ``NotImplementedError`` message.

    Returns:
        The source with each region (markers included) replaced by
        ``raise NotImplementedError(message)`` at the indentation of its ``# BEGIN SOLUTION`` line.

    Raises:
        SolutionMarkerError: no region, a region never closed, an ``END`` without ``BEGIN``, nested regions,
            or a result that does not parse as Python.
    """
    out: List[str] = []
    begin_line = 0
    regions = 0
    for lineno, line in enumerate(source.splitlines(), start=1):
        begin = _BEGIN.match(line)
        if begin:
            if begin_line:
                raise SolutionMarkerError(
                    f"{where}: '# BEGIN SOLUTION' at line {lineno} is nested inside the region opened at line "
                    f"{begin_line}; close that one with '# END SOLUTION' first."
                )
            begin_line = lineno
            regions += 1
            out.append(f"{begin['indent']}raise NotImplementedError({json.dumps(message, ensure_ascii=False)})")
        elif _END.match(line):
            if not begin_line:
                raise SolutionMarkerError(
                    f"{where}: '# END SOLUTION' at line {lineno} has no matching '# BEGIN SOLUTION' above it."
                )
            begin_line = 0
        elif not begin_line:
            out.append(line)
    if begin_line:
        raise SolutionMarkerError(f"{where}: '# BEGIN SOLUTION' at line {begin_line} is never closed by "
                                  "'# END SOLUTION'.")
    if regions == 0:
        raise SolutionMarkerError(
            f"{where}: the cell is tagged '{SOLUTION_TAG}' but has no '# BEGIN SOLUTION' / '# END SOLUTION' "
            "lines, so the student edition would show its whole answer. Wrap the lines a learner writes in "
            "them (CONTRIBUTING.md), or remove the tag."
        )
    stub = "\n".join(out)
    _check_syntax(stub, where)
    return stub


def _check_syntax(code: str, where: str) -> None:
    """Raise SolutionMarkerError if the stub is not valid (IPython) Python, e.g. a region cut a statement."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        code = TransformerManager().transform_cell(code)  # %magics and !shell lines -> Python
    except ImportError:  # pragma: no cover - IPython ships with every kernel
        pass
    try:
        compile(code, where, "exec")
    except SyntaxError as err:
        raise SolutionMarkerError(
            f"{where}: after replacing the solution regions the cell is not valid Python ({err.msg}, line "
            f"{err.lineno}). A region must cover whole statements; put the markers on their own lines."
        ) from None


def _scan_markdown(markdown: str, inside: bool) -> Tuple[str, bool, bool]:
    """Drop the solution parts of one markdown text.

    Args:
        markdown: A markdown cell's source or a page.
        inside: Whether the text starts inside a gated solution (a ``{solution-start}`` in an earlier cell).

    Returns:
        ``(text, inside, removed)``: the text without ``{solution}`` directives, without gated
        ``{solution-start}`` / ``{solution-end}`` directives and without everything between them; whether the
        text ends inside a gated solution; whether anything was removed.
    """
    if not inside and not any(d in markdown for d in _SOLUTION_DIRECTIVES):
        return markdown, False, False
    lines = markdown.splitlines()
    out: List[str] = []
    open_directives: List[Tuple[str, int]] = []  # fences of the directives we are inside, innermost last
    removed = inside
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            if not inside:
                out.append(lines[i])
            i += 1
            continue
        fence, info = match["fence"], match["info"]
        if not inside and not info and open_directives and fence[0] == open_directives[-1][0] \
                and len(fence) >= open_directives[-1][1]:  # closes the innermost directive
            open_directives.pop()
            out.append(lines[i])
            i += 1
            continue
        name = next((d for d in _SOLUTION_DIRECTIVES if info.startswith(d)), None)
        literal = fence[0] != ":" and (not info.startswith("{") or info.startswith(_LITERAL_DIRECTIVES))
        if name is None and not literal and not inside:  # another directive: keep its fences, search its body
            if info:
                open_directives.append((fence[0], len(fence)))
            out.append(lines[i])
            i += 1
            continue
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if name is None:  # a code block (or, inside a gated solution, any block): verbatim unless inside
            if not inside:
                out.extend(lines[i:j + 1])
        else:
            removed = True
            if name == "{solution-start}":
                inside = True
            elif name == "{solution-end}":
                inside = False
        i = j + 1  # past the closing fence (or the end of the text if it was never closed)
    if not removed:
        return markdown, inside, False
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip("\n")
    return text, inside, True


def strip_solution_directives(markdown: str) -> str:
    """Remove every written solution from a markdown page or cell.

    ``{solution}`` directives are deleted with their content, and so is a gated solution: ``{solution-start}``,
    everything after it and ``{solution-end}``. A fenced block ends at the first later line made only of its
    fence character, at least as long as its opening fence (MyST's rule, so fences nested in a solution are
    skipped). Code blocks (```` ```python ````, ```` ````md ````, ``{code-block}``) are copied verbatim, so a
    page that *shows* the directive syntax keeps it; other directives (``{exercise}``, admonitions) are
    searched inside.
    """
    return _scan_markdown(markdown, inside=False)[0]


class StripSolutions(Preprocessor):
    """nbconvert preprocessor that turns an instructor notebook into its student edition.

    * Code cells tagged ``solution``: each ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` region becomes
      ``raise NotImplementedError(...)`` (see :func:`stub_source`); the tag becomes ``exercise``. Inside a
      gated solution the stub is preceded by a short "your turn" markdown cell.
    * Written solutions: ``{solution}`` directives are removed from the markdown. A gated solution
      (``{solution-start}`` ... ``{solution-end}``, possibly across cells) is removed with all its content,
      prose and code, *except* the code cells tagged ``solution``, which stay as the learner's stubs.
    * Outputs and execution counts: all cleared, unless ``keep_outputs`` (used for the staged HTML book), in
      which case only the stubbed cells and the self-check cells (``check_...(``) lose them.

    Usage::

        from nbconvert import NotebookExporter
        exporter = NotebookExporter(preprocessors=[StripSolutions()])
        body, _ = exporter.from_filename("notebooks/04_se_block.ipynb")
    """

    keep_outputs = Bool(False, help="Keep outputs of the cells that are not stubbed or self-checks.").tag(config=True)
    stub_message = Unicode(STUB_MESSAGE, help="Message of the NotImplementedError in each stub.").tag(config=True)
    your_turn = Unicode(YOUR_TURN, help="Markdown cell put before a stub inside a gated solution.").tag(config=True)

    def preprocess(self, nb, resources):
        name = (resources or {}).get("metadata", {}).get("name", "notebook")
        cells = []
        inside = False  # within a gated solution
        for index, cell in enumerate(nb.cells):
            where = f"{name}, cell {index}" + (f" (id {cell['id']})" if cell.get("id") else "")
            tags = list(cell.metadata.get("tags", []))
            if cell.cell_type == "markdown":
                text, inside, removed = _scan_markdown(cell.source, inside)
                if removed and not text.strip():
                    continue
                cell.source = text
            elif cell.cell_type == "code" and SOLUTION_TAG in tags:
                cell.source = stub_source(cell.source, where, self.stub_message)
                cell.metadata["tags"] = ["exercise" if t == SOLUTION_TAG else t for t in tags]
                cell.outputs, cell.execution_count = [], None
                if inside and self.your_turn:
                    note = nbformat.v4.new_markdown_cell(self.your_turn)
                    if "id" not in cell:
                        del note["id"]
                    cells.append(note)
            elif inside:  # the answer's code (or raw) cells
                continue
            elif cell.cell_type == "code" and (not self.keep_outputs or _CHECK_CALL.search(cell.source)):
                cell.outputs, cell.execution_count = [], None
            if cell.cell_type == "code":
                cell.metadata.pop("execution", None)
            cells.append(cell)
        if inside:
            raise SolutionMarkerError(f"{name}: a {{solution-start}} directive is never closed by {{solution-end}}.")
        nb.cells = cells
        return nb, resources


def stub_notebook(nb: nbformat.NotebookNode, name: str = "notebook", keep_outputs: bool = False
                  ) -> nbformat.NotebookNode:
    """Return the student edition of ``nb`` (a copy; ``nb`` is left untouched). See :class:`StripSolutions`."""
    stubbed, _ = StripSolutions(keep_outputs=keep_outputs).preprocess(
        copy.deepcopy(nb), {"metadata": {"name": name}})
    return stubbed


def has_outputs(nb: nbformat.NotebookNode) -> bool:
    """True if any code cell carries an output (the notebook was executed and committed with its outputs)."""
    return any(c.cell_type == "code" and c.get("outputs") for c in nb.cells)


def _ignore_copy(out: Path):
    """shutil.copytree filter for staging the book: no build outputs, tests, hidden folders or ``out`` itself."""
    skip_names = {"_build", "tests", "grades", "test-artifacts", "__pycache__", "node_modules", "student"}

    def ignore(folder: str, names: Iterable[str]) -> List[str]:
        here = Path(folder).resolve()
        return [entry for entry in names
                if entry.startswith(".") or entry in skip_names or entry.endswith(".egg-info")
                or (here / entry).resolve() == out]

    return ignore


def write_student_notebooks(notebooks: Path, dest: Path) -> List[Path]:
    """Write the stubbed, output-free edition of every ``notebooks/*.ipynb`` (and copy other files) to ``dest``.

    Returns:
        The written notebook paths, sorted.
    """
    notebooks, dest = Path(notebooks), Path(dest)
    if not notebooks.is_dir():
        raise FileNotFoundError(f"arcface-student: notebook folder {notebooks} does not exist.")
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(notebooks, dest, ignore=shutil.ignore_patterns(".*", "__pycache__", "*.ipynb"))
    written = []
    for path in sorted(notebooks.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        target = dest / path.name
        nbformat.write(stub_notebook(nb, name=str(path), keep_outputs=False), target)
        written.append(target)
    return written


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def student_config(config_path: Path) -> dict:
    """The book's ``_config.yml`` with the student-edition overrides applied."""
    import yaml

    config = yaml.safe_load(Path(config_path).read_text()) or {}
    overrides = {
        "title": f"{config.get('title', 'Book')} (student edition)",
        # sphinx-exercise: drop every {solution} directive from the pages.
        "sphinx": {"config": {"hide_solutions": True}},
        # The staged notebooks keep the instructor outputs; executing them would hit the stubs.
        "execute": {"execute_notebooks": "off"},
        # Launch buttons open the repository's notebooks, which are the instructor edition.
        "launch_buttons": {"binderhub_url": "", "colab_url": "", "jupyterhub_url": "", "thebe": False},
    }
    return _deep_merge(config, overrides)


def _execute_notebook(path: Path, timeout: int) -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, path)


def stage_student_book(book_root: Path, out: Path, execute: str = "auto") -> Tuple[Path, Path]:
    """Copy the book sources to ``out/_source`` with every notebook stubbed and a student ``_config.yml``.

    Args:
        book_root: The folder holding ``_config.yml`` and ``_toc.yml``.
        out: The student-edition folder (``student``).
        execute: ``"auto"`` executes (with nbclient, before stubbing) the notebooks committed without
            outputs, ``"always"`` every notebook, ``"never"`` none.

    Returns:
        ``(source_folder, config_path)`` for ``jupyter-book build``.
    """
    import yaml

    book_root, out = Path(book_root).resolve(), Path(out).resolve()
    source = out / "_source"
    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(book_root, source, ignore=_ignore_copy(out))
    config = student_config(book_root / "_config.yml")
    timeout = int((config.get("execute") or {}).get("timeout", 300))
    for path in sorted(source.rglob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if execute == "always" or (execute == "auto" and not has_outputs(nb)
                                   and any(c.cell_type == "code" for c in nb.cells)):
            _execute_notebook(path, timeout)
            nb = nbformat.read(path, as_version=4)
        rel = path.relative_to(source)
        nbformat.write(stub_notebook(nb, name=str(rel), keep_outputs=True), path)
    for path in sorted(source.rglob("*.md")):  # prose pages: the download button serves their source
        text = path.read_text(encoding="utf-8")
        stripped = strip_solution_directives(text)
        if stripped != text:
            path.write_text(stripped + "\n", encoding="utf-8")
    config_path = source / "_config.yml"
    config_path.write_text("# Generated by arcface-student from the book's _config.yml: the student edition.\n"
                           + yaml.safe_dump(config, sort_keys=False))
    return source, config_path


def build_student_html(book_root: Path, out: Path, jb_flags: Sequence[str] = (), execute: str = "auto") -> Path:
    """Build the HTML student edition into ``out/_build/html`` and return that folder."""
    source, config_path = stage_student_book(book_root, out, execute=execute)
    out = Path(out).resolve()
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(source),
           "--config", str(config_path), "--toc", str(source / "_toc.yml"), "--path-output", str(out),
           *jb_flags]
    print("arcface-student:", " ".join(shlex.quote(c) for c in cmd[3:]), flush=True)
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise RuntimeError(f"arcface-student: jupyter-book build of the student edition failed "
                           f"(exit code {result.returncode}); see its messages above.")
    return out / "_build" / "html"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arcface-student",
        description="Write the student edition: stubbed notebooks in OUT/notebooks and the HTML book with "
                    "solutions hidden in OUT/_build/html. The instructor edition is `make book`.")
    parser.add_argument("--book-root", default=".", type=Path,
                        help="folder holding _config.yml and _toc.yml (default: .)")
    parser.add_argument("--notebooks", default=None, type=Path,
                        help="chapter notebooks to stub (default: BOOK_ROOT/notebooks)")
    parser.add_argument("--out", default="student", type=Path, help="output folder (default: student)")
    parser.add_argument("--no-html", action="store_true", help="only write the stubbed notebooks")
    parser.add_argument("--execute", choices=("auto", "always", "never"), default="auto",
                        help="execute instructor notebooks before staging the HTML book: auto = only those "
                             "committed without outputs (default)")
    parser.add_argument("--jb-flags", default="",
                        help='extra flags for jupyter-book build, e.g. --jb-flags="-W -n --keep-going"')
    args = parser.parse_args(argv)
    notebooks = args.notebooks or args.book_root / "notebooks"
    try:
        written = write_student_notebooks(notebooks, args.out / "notebooks")
        print(f"arcface-student: {len(written)} stubbed notebook(s) in {args.out / 'notebooks'}")
        if not args.no_html:
            html = build_student_html(args.book_root, args.out, shlex.split(args.jb_flags), args.execute)
            print(f"arcface-student: student book in {html} (open {html / 'index.html'})")
    except (SolutionMarkerError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
