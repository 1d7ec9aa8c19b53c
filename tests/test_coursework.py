"""Coursework tools: the student edition (resnet_arcface.teach.coursework.student) and the grader (.grade).

The notebooks here are synthetic, written with nbformat, so these tests do not depend on the chapters; one
test also runs the student edition over the real ``notebooks/*.ipynb`` (skipped while there are none), and the
``book`` tests build a tiny temporary book, and the real one, in both editions.
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import subprocess
import sys
import textwrap
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from resnet_arcface.teach import exercises
from resnet_arcface.teach.coursework import grade, student
from resnet_arcface.teach.coursework.student import STUB_MESSAGE, SolutionMarkerError, stub_notebook, stub_source

REPO_ROOT = Path(__file__).resolve().parents[1]
STUB_LINE = f'raise NotImplementedError("{STUB_MESSAGE}")'


def make_nb(*cells) -> nbformat.NotebookNode:
    """A notebook from ("code"|"md", source[, tags]) tuples or plain strings (code)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for cell in cells:
        kind, source, tags = (("code", cell, []) if isinstance(cell, str) else (tuple(cell) + ([],))[:3])
        new = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        nb.cells.append(new(source, metadata={"tags": list(tags)} if tags else {}))
    return nb


# ---------------------------------------------------------------------------------------------------------------
# The student edition: stubs
# ---------------------------------------------------------------------------------------------------------------

SE_SOLUTION = textwrap.dedent('''\
    class MySEBlock(nn.Module):
        """Squeeze and excite."""

        def __init__(self, channel, reduction=16):
            super().__init__()
            # BEGIN SOLUTION
            self.avg_pool = nn.AdaptiveAvgPool2d(1)  # SECRET-1
            # END SOLUTION

        def forward(self, x):
            identity = x
            # BEGIN SOLUTION
            return x * self.avg_pool(x)  # SECRET-2
            # END SOLUTION''')


def test_stub_replaces_each_region_and_keeps_the_code_around_it():
    stub = stub_source(SE_SOLUTION)
    assert "SECRET" not in stub and "BEGIN SOLUTION" not in stub and "END SOLUTION" not in stub
    assert stub.splitlines() == [
        "class MySEBlock(nn.Module):",
        '    """Squeeze and excite."""',
        "",
        "    def __init__(self, channel, reduction=16):",
        "        super().__init__()",
        f"        {STUB_LINE}",
        "",
        "    def forward(self, x):",
        "        identity = x",
        f"        {STUB_LINE}",
    ]


def test_stub_raises_not_implemented_when_used():
    from torch import nn

    namespace = {"nn": nn}
    exec(stub_source(SE_SOLUTION), namespace)
    with pytest.raises(NotImplementedError, match="Exercise: write this part"):
        namespace["MySEBlock"](8)
    namespace = {}
    exec(stub_source("def my_conv3x3(a, b, stride=1):\n    # BEGIN SOLUTION\n    return a\n    # END SOLUTION"),
         namespace)
    with pytest.raises(NotImplementedError):
        namespace["my_conv3x3"](1, 2)


@pytest.mark.parametrize("source, problem", [
    ("def f():\n    return 1", "has no '# BEGIN SOLUTION'"),
    ("def f():\n    # BEGIN SOLUTION\n    return 1", "never closed"),
    ("def f():\n    return 1\n    # END SOLUTION", "no matching '# BEGIN SOLUTION'"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\nx = 1\n# END SOLUTION", "nested"),
    ("x = f(\n    # BEGIN SOLUTION\n    1,\n    # END SOLUTION\n)", "not valid Python"),
])
def test_malformed_solution_cells_raise_a_clear_error(source, problem):
    nb = make_nb("import torch", ("code", source, ["solution"]))
    with pytest.raises(SolutionMarkerError, match=re.escape(problem)) as info:
        stub_notebook(nb, name="notebooks/99_demo.ipynb")
    assert "notebooks/99_demo.ipynb, cell 1" in str(info.value)


@pytest.mark.parametrize("directive", ["```{solution-start} ex-1\n:class: dropdown\n```", "```{solution-end}\n```",
                                       "::::{solution} ex-1\n:class: dropdown\nANSWER\n::::"])
def test_a_solution_directive_in_an_untagged_cell_fails_loudly(directive):
    nb = make_nb("import torch", ("md", ":::{exercise}\n:label: ex-1\nQ?\n:::\n\n" + directive))
    with pytest.raises(SolutionMarkerError, match=r"demo\.ipynb, cell 1: .* not tagged 'remove-student'"):
        stub_notebook(nb, name="demo.ipynb")
    nb.cells[1].metadata["tags"] = ["remove-student"]  # tagged: the whole cell goes, exercise text included
    assert [c.source for c in stub_notebook(nb).cells] == ["import torch"]


def test_stub_accepts_ipython_syntax():
    stub = stub_source("%matplotlib inline\ndef f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION")
    assert stub.splitlines()[0] == "%matplotlib inline"


# ---------------------------------------------------------------------------------------------------------------
# The student edition: a chapter written to the convention (CONTRIBUTING.md, "How a chapter is written")
# ---------------------------------------------------------------------------------------------------------------

REMOVE = ["remove-student"]


def chapter_like_notebook() -> nbformat.NotebookNode:
    """The shape of a chapter's exercise section: answers in cells tagged remove-student, the learner's cell tagged
    solution between its gates, the self-check after it."""
    nb = make_nb(
        "import torch\nfrom torch import nn",
        "print('visible output')",
        ("md", "## Check yourself\n\n:::{exercise}\n:label: ex-1\nHow many parameters?\n:::"),
        ("md", "::::{solution} ex-1\n:class: dropdown\nWRITTEN-ANSWER\n```python\nprint('WRITTEN-CODE')\n```\n::::",
         REMOVE),
        ("md", ":::{exercise}\n:label: ex-2\n**Implement it yourself.**\n:::"),
        ("md", "```{solution-start} ex-2\n:class: dropdown\n```", REMOVE),
        ("code", SE_SOLUTION, ["solution"]),
        ("md", "```{solution-end}\n```", REMOVE),
        ("code", "from resnet_arcface.teach.exercises import check_se_block\ncheck_se_block(MySEBlock)",
         ["nbval-check-output"]),
        ("md", ":::{exercise}\n:label: ex-3\nWhy?\n:::"),
        ("md", "```{solution-start} ex-3\n:class: dropdown\n```", REMOVE),
        ("md", "GATED-ANSWER-PROSE", REMOVE),
        ("code", "print('GATED-ANSWER-CODE')", REMOVE),
        ("md", "```{solution-end}\n```", REMOVE),
        ("md", "## Summary"),
    )
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="OUTPUT-OF-A-CELL\n")]
            cell.execution_count = 1
            cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    return nb


def test_student_edition_removes_tagged_cells_stubs_and_clears_outputs():
    nb = chapter_like_notebook()
    out = stub_notebook(nb, name="chapter")
    assert [c.cell_type for c in out.cells] == ["code", "code", "markdown", "markdown", "code", "code", "markdown",
                                                "markdown"]
    assert out.cells[6].source == ":::{exercise}\n:label: ex-3\nWhy?\n:::" and out.cells[7].source == "## Summary"
    assert all(c.outputs == [] and c.execution_count is None and "execution" not in c.metadata
               for c in out.cells if c.cell_type == "code")
    text = nbformat.writes(out)
    for leaked in ("SECRET", "WRITTEN", "GATED-ANSWER", "BEGIN SOLUTION", "END SOLUTION", "{solution"):
        assert leaked not in text
    assert out.cells[4].metadata["tags"] == ["exercise"] and STUB_LINE in out.cells[4].source
    assert "SECRET-1" in nbformat.writes(nb), "the instructor notebook must be left untouched"


def test_html_variant_keeps_the_outputs_of_ordinary_cells():
    out = stub_notebook(chapter_like_notebook(), keep_outputs=True)
    with_outputs = [c.source.splitlines()[0] for c in out.cells if c.cell_type == "code" and c.outputs]
    assert with_outputs == ["import torch", "print('visible output')"]  # not the stub, self-check or answer


def test_arcface_student_writes_stubbed_notebooks(tmp_path, capsys):
    src = tmp_path / "notebooks"
    src.mkdir()
    nbformat.write(chapter_like_notebook(), src / "04_se_block.ipynb")
    (src / "figure.png").write_bytes(b"png")
    assert student.main(["--notebooks", str(src), "--out", str(tmp_path / "student"), "--no-html"]) == 0
    written = tmp_path / "student" / "notebooks" / "04_se_block.ipynb"
    assert "SECRET" not in written.read_text() and (written.parent / "figure.png").exists()
    nbformat.write(make_nb(("code", "x = 1", ["solution"])), src / "05_bad.ipynb")
    assert student.main(["--notebooks", str(src), "--out", str(tmp_path / "student"), "--no-html"]) == 1
    nbformat.write(make_nb("x = 1", ("md", "```{solution-start} ex-1\n```")), src / "05_bad.ipynb")
    assert student.main(["--notebooks", str(src), "--out", str(tmp_path / "student"), "--no-html"]) == 1
    assert "05_bad.ipynb, cell 1: " in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# The student edition of the real chapters
# ---------------------------------------------------------------------------------------------------------------

def _normal(text: str) -> str:
    return " ".join(text.split())


def solution_regions(nb) -> list:
    """The code between the markers of every solution cell, one string per region."""
    regions = []
    for cell in nb.cells:
        if cell.cell_type == "code" and "solution" in cell.metadata.get("tags", []):
            for block in re.findall(r"#\s*BEGIN SOLUTION[^\n]*\n(.*?)\n[ \t]*#\s*END SOLUTION", cell.source, re.S):
                regions.append(block)
    return regions


def answers(nb) -> list:
    """What a student must not see besides the solution regions: the long lines of the markdown cells tagged
    remove-student (written solutions) and the whole source of the code cells tagged remove-student."""
    found = []
    for cell in nb.cells:
        if "remove-student" in cell.metadata.get("tags", []):
            found += ([cell.source] if cell.cell_type == "code" and len(cell.source.strip()) >= 20 else
                      [ln for ln in cell.source.splitlines() if len(ln.strip()) >= 30 and "{solution" not in ln])
    return found


REAL_NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def _follows_tag_convention(nb) -> bool:
    """A solution cell, and every solution directive in a cell tagged remove-student (chapters being rewritten
    may not yet; `arcface-student` stops on those, naming the cell)."""
    tagged = [("remove-student" in c.metadata.get("tags", []), c.source) for c in nb.cells if c.cell_type == "markdown"]
    return bool(solution_regions(nb)) and any(t for t, _ in tagged) and not any(
        not t and re.search(r"^[ \t]*(`{3,}|:{3,})[ \t]*\{solution", src, re.M) for t, src in tagged)


#: The chapters already written to the tag convention.
REAL_WITH_SOLUTIONS = [p for p in REAL_NOTEBOOKS if _follows_tag_convention(nbformat.read(p, as_version=4))]


def _errors(cell) -> str:
    return "\n".join(f"{o.get('ename')}: {o.get('evalue')}\n" + "\n".join(o.get("traceback", []))
                     for o in cell.get("outputs", []) if o.output_type == "error")


def _raises_not_implemented(text: str) -> bool:
    return "NotImplementedError" in text or "Exercise: write this part" in text


def _run(cells, cwd: Path, timeout: int = 300):
    from nbclient import NotebookClient

    nb = make_nb()
    nb.cells = [nbformat.from_dict(dict(c)) for c in cells]
    NotebookClient(nb, kernel_name="python3", allow_errors=True, timeout=timeout,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def _check_stubs_raise(path: Path) -> list:
    """Run each stub with the notebook's first code cell and the cell after it; return the stubs that do not
    raise NotImplementedError (falling back to the whole notebook up to that point if the short run fails
    for another reason)."""
    nb = stub_notebook(nbformat.read(path, as_version=4), name=path.name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    problems = []
    for i, cell in enumerate(code):
        if "exercise" not in cell.metadata.get("tags", []):
            continue
        after = code[i + 1:i + 2]
        short = _run([code[0], cell, *after], path.parent)
        if _raises_not_implemented("".join(_errors(c) for c in short.cells[1:])):
            continue
        full = _run(code[:i + 2], path.parent)
        if not _raises_not_implemented("".join(_errors(c) for c in full.cells[i:])):
            problems.append(f"{path.name}: the stub in code cell {i} and the cell after it raised no "
                            f"NotImplementedError; errors: {_errors(full.cells[i])}{_errors(full.cells[-1])}")
    return problems


@pytest.mark.skipif(not REAL_WITH_SOLUTIONS, reason="no chapter notebook written to the tag convention yet")
@pytest.mark.timeout(1200)
def test_student_edition_of_the_real_chapters(tmp_path):
    for path in REAL_WITH_SOLUTIONS:
        original = nbformat.read(path, as_version=4)
        stubbed = stub_notebook(original, name=path.name)
        text = nbformat.writes(stubbed)
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text, path.name
        assert not re.search(r"^[ \t]*(`{3,}|:{3,})\{solution", text.replace("\\n", "\n"), re.M), path.name
        everything = _normal("\n".join(c.source for c in stubbed.cells))
        stubs = [c for c in stubbed.cells if "exercise" in c.metadata.get("tags", [])]
        assert stubs and all(STUB_LINE in c.source for c in stubs), path.name
        stub_lines = {line.strip() for c in stubs for line in c.source.splitlines()}
        kept = {line.strip() for c in original.cells if "solution" in c.metadata.get("tags", [])
                for line in re.sub(r"#\s*BEGIN SOLUTION.*?#\s*END SOLUTION", "", c.source, flags=re.S).splitlines()}
        for answer in answers(original):
            assert _normal(answer) not in everything, f"{path.name}: a written or gated answer survives:\n{answer}"
        for region in solution_regions(original):
            assert _normal(region) not in everything, f"{path.name}: solution code survives:\n{region}"
            for line in region.splitlines():
                line = line.strip()
                if len(line) >= 12 and not line.startswith("#") and line not in kept:
                    assert line not in stub_lines, f"{path.name}: solution line in a stub: {line}"
        assert all(not c.get("outputs") for c in stubbed.cells if c.cell_type == "code"), path.name
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        problems = [p for found in pool.map(_check_stubs_raise, REAL_WITH_SOLUTIONS) for p in found]
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------------------------
# The grader
# ---------------------------------------------------------------------------------------------------------------

IMPORTS = "import torch\nfrom torch import nn"
CONV_OK = textwrap.dedent("""\
    def my_conv3x3(inplanes, outplanes, stride=1):
        return nn.Conv2d(inplanes, outplanes, kernel_size=3, stride=stride, padding=1, bias=False)""")
CONV_BIAS = CONV_OK.replace("bias=False", "bias=True")  # the known mistake: a bias before BatchNorm
SE_OK = textwrap.dedent("""\
    class MySEBlock(nn.Module):
        def __init__(self, channel, reduction=16):
            super().__init__()
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Sequential(nn.Linear(channel, channel // reduction), nn.PReLU(),
                                    nn.Linear(channel // reduction, channel), nn.Sigmoid())

        def gate(self, x):
            n, c, _, _ = x.shape
            return self.fc(self.avg_pool(x).view(n, c)).view(n, c, 1, 1)

        def forward(self, x):
            return x * self.gate(x)""")
SE_RELU = SE_OK.replace("nn.PReLU()", "nn.ReLU()")
CONV_NONE = "def my_conv3x3(inplanes, outplanes, stride=1):\n    return None"
CHEAT = textwrap.dedent("""\
    from IPython.display import display
    # print the success lines the checks print, and results in the grader's own format, from a learner cell
    print("check_conv3x3: all 4 configurations match the reference (structure, eval/train outputs and gradients) ✓")
    print("check_se_block: all 4 configurations match the reference (structure, eval/train outputs and gradients) ✓")
    for exercise in ("conv3x3", "se_block"):
        display({"application/vnd.arcface-grade+json": {"exercise": exercise, "result": [True, "ok"]}}, raw=True)""")

SUBMISSIONS = {
    "alice": [IMPORTS, CONV_OK, "1 / 0  # a failing cell does not stop the rest", SE_OK],  # correct
    "bob": [IMPORTS, CONV_BIAS],  # a known mistake, and no SE block
    "carol": [IMPORTS, CONV_OK, "import os\nos._exit(1)", SE_OK],  # the kernel dies
    "dave": [IMPORTS, CONV_OK, SE_OK, "import time\ntime.sleep(1e6)"],  # hangs
    "eve": [IMPORTS, CONV_NONE, SE_RELU, CHEAT],  # prints success lines and fake results
}
TIMEOUT = 20


def expected(check, source: str, name: str):
    """(passed, message) of ``check`` on ``name`` defined by ``source``, as the grader words them."""
    namespace = {"__name__": "__main__"}
    exec(source, namespace)

    class Capture(io.StringIO):
        encoding = "utf-8"

    captured = Capture()
    try:
        with contextlib.redirect_stdout(captured):
            check(namespace[name])
    except AssertionError as error:
        return "false", str(error).strip()
    lines = [line.strip() for line in captured.getvalue().splitlines() if line.strip().startswith(check.__name__)]
    return "true", lines[-1]


def write_submissions(folder: Path, submissions: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for learner, cells in submissions.items():
        if isinstance(cells, dict):  # a folder of notebooks
            write_submissions(folder / learner, cells)
        else:
            nbformat.write(make_nb(*cells), folder / f"{learner}.ipynb")
    return folder


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grading")
    folder = write_submissions(tmp / "submissions", SUBMISSIONS)
    start = time.monotonic()
    rows = grade.grade_submissions(folder, tmp / "grades.csv", timeout=TIMEOUT, check_timeout=30, jobs=2,
                                   exercises=["conv3x3", "se_block"])
    elapsed = time.monotonic() - start
    print(f"\ngraded {len(SUBMISSIONS)} submissions in {elapsed:.1f} s")
    return rows, tmp / "grades.csv", elapsed


@pytest.mark.timeout(300)
def test_grading_five_submissions(graded):
    rows, csv_path, elapsed = graded
    with csv_path.open(newline="", encoding="utf-8") as handle:
        table = [tuple(r.values()) for r in csv.DictReader(handle)]
    assert table == [tuple(r.values()) for r in rows]
    conv, se = exercises.check_conv3x3, exercises.check_se_block
    died = "the kernel died (crashed or exited) while running cell 3 of 4"
    timed_out = f"timed out after {TIMEOUT} s"
    assert table == [
        ("alice", "conv3x3", *expected(conv, IMPORTS + "\n" + CONV_OK, "my_conv3x3")),
        ("alice", "se_block", *expected(se, IMPORTS + "\n" + SE_OK, "MySEBlock")),
        ("bob", "conv3x3", *expected(conv, IMPORTS + "\n" + CONV_BIAS, "my_conv3x3")),
        ("bob", "se_block", "false", "MySEBlock not defined"),
        ("carol", "conv3x3", "false", died),
        ("carol", "se_block", "false", died),
        ("dave", "conv3x3", "false", timed_out),
        ("dave", "se_block", "false", timed_out),
        ("eve", "conv3x3", *expected(conv, IMPORTS + "\n" + CONV_NONE, "my_conv3x3")),
        ("eve", "se_block", *expected(se, IMPORTS + "\n" + SE_RELU, "MySEBlock")),
    ]
    assert table[0][2] == table[1][2] == "true" and "bias" in table[2][3]
    assert all(r[2] == "false" for r in table[2:])


def test_grading_time_is_bounded(graded):
    _, _, elapsed = graded
    assert elapsed < 90, f"grading 5 notebooks with a {TIMEOUT} s limit took {elapsed:.0f} s"


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return not re.search(r"^State:\s+Z", status, re.M)  # a zombie is dead


@pytest.mark.timeout(120)
def test_a_worker_past_its_hard_limit_is_killed_with_its_kernel(tmp_path, monkeypatch):
    pid_file = tmp_path / "kernel.pid"
    nb = make_nb(IMPORTS, f"import os\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\nwhile True:\n    pass")
    nbformat.write(nb, tmp_path / "spinner.ipynb")
    monkeypatch.setattr(grade, "hard_limit", lambda *args: 30)  # below the notebook's own 90 s limit
    start = time.monotonic()
    results = grade.run_worker(tmp_path / "spinner.ipynb", [("conv3x3", "my_conv3x3")], timeout=90, check_timeout=10)
    assert time.monotonic() - start < 50
    assert results == {"conv3x3": (False, "timed out after 90 s")}
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid), f"the learner's kernel (pid {pid}) survived its worker"


@pytest.mark.timeout(200)
def test_grading_a_folder_per_learner_with_the_cli(tmp_path, capsys):
    folder = write_submissions(tmp_path / "subs", {
        "frank": {"01_conv3x3": [IMPORTS, CONV_OK], "04_se_block": [IMPORTS, CONV_BIAS, SE_OK]},
        "gina": [IMPORTS, "def my_conv3x3(*args, **kwargs):\n    while True:\n        pass"],  # hangs in the check
        "broken": [],
    })
    (folder / "broken.ipynb").write_text("{ not a notebook")
    out = tmp_path / "grades.csv"
    assert grade.main([str(folder), "--out", str(out), "--timeout", "30", "--check-timeout", "5", "--jobs", "2",
                       "--exercises", "conv3x3,se_block,ir_block"]) == 0
    with out.open(newline="", encoding="utf-8") as handle:
        rows = [(r["learner"], r["exercise"], r["passed"], r["message"]) for r in csv.DictReader(handle)]
    assert [r[:3] for r in rows] == [
        ("broken", "conv3x3", "false"), ("broken", "se_block", "false"), ("broken", "ir_block", "false"),
        ("frank", "conv3x3", "true"), ("frank", "se_block", "true"), ("frank", "ir_block", "false"),
        ("gina", "conv3x3", "false"), ("gina", "se_block", "false"), ("gina", "ir_block", "false"),
    ]
    assert rows[0][3].startswith("could not read the notebook")
    assert rows[5][3] == "MyIRBlock not defined"
    assert rows[6][3] == rows[7][3] == "the checks timed out (5 s per exercise)"
    assert grade.main([str(folder), "--out", str(out), "--exercises", "nope"]) == 2
    assert "unknown exercise(s) nope" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# The HTML editions (slow: they build books)
# ---------------------------------------------------------------------------------------------------------------

class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def page_text(path: Path) -> str:
    parser = _Text()
    parser.feed(path.read_text(encoding="utf-8"))
    return _normal(" ".join(parser.parts))


TINY_CONFIG = """\
title: Tiny
only_build_toc_files: true
execute:
  execute_notebooks: cache
sphinx:
  extra_extensions: [sphinx_exercise]
"""


@pytest.mark.book
@pytest.mark.timeout(600)
def test_student_book_hides_what_the_instructor_book_shows(tmp_path):
    book = tmp_path / "book"
    (book / "notebooks").mkdir(parents=True)
    (book / "_config.yml").write_text(TINY_CONFIG)
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: notebooks/ch\n- file: page\n")
    (book / "intro.md").write_text("# Intro\n")
    (book / "page.md").write_text("# Page\n\nProse only.\n")
    nb = make_nb(
        ("md", "# Chapter\n"),
        "import torch\nfrom torch import nn\nprint('VISIBLE-OUTPUT')",
        ("md", ":::{exercise}\n:label: ex-1\nHow many?\n:::"),
        ("md", "::::{solution} ex-1\n:class: dropdown\nWRITTEN-ANSWER\n```python\nprint('WRITTEN-CODE')\n```\n::::",
         REMOVE),
        ("md", ":::{exercise}\n:label: ex-2\n**Implement it yourself.**\n:::"),
        ("md", "```{solution-start} ex-2\n:class: dropdown\n```", REMOVE),
        ("code", SE_SOLUTION, ["solution"]),
        ("md", "```{solution-end}\n```", REMOVE),
        ("code", "def check_demo(obj):\n    print('CHECK-' + 'RAN')\ncheck_demo(1)"),  # a self-check cell
    )
    nbformat.write(nb, book / "notebooks" / "ch.ipynb")
    flags = ["-W", "-n", "--keep-going"]
    jb = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build"]
    subprocess.run([*jb, str(book), *flags], check=True, capture_output=True)
    instructor = page_text(book / "_build" / "html" / "notebooks" / "ch.html")
    assert "SECRET-1" in instructor and "WRITTEN-ANSWER" in instructor and "VISIBLE-OUTPUT" in instructor

    assert student.main(["--book-root", str(book), "--out", str(tmp_path / "student"),
                         "--jb-flags=" + " ".join(flags)]) == 0
    html = tmp_path / "student" / "_build" / "html"
    chapter = page_text(html / "notebooks" / "ch.html")
    assert "VISIBLE-OUTPUT" in chapter and "Implement it yourself" in chapter and STUB_MESSAGE in chapter
    for secret in ("SECRET", "WRITTEN-ANSWER", "WRITTEN-CODE", "CHECK-RAN"):
        assert secret not in chapter
    leaks = [str(p.relative_to(html)) for p in html.rglob("*") if p.is_file() and p.suffix in {
        ".html", ".ipynb", ".md", ".js", ".txt"} and re.search(r"SECRET|WRITTEN-|PAGE-ANSWER", p.read_text(errors="ignore"))]
    assert not leaks, f"solutions in the student book's files: {leaks}"
    (book / "page.md").write_text("# Page\n\n::::{solution} ex-1\nPAGE-ANSWER\n::::\n")  # prose holds no solutions
    assert student.main(["--book-root", str(book), "--out", str(tmp_path / "student"), "--no-html"]) == 0
    assert student.main(["--book-root", str(book), "--out", str(tmp_path / "student")]) == 1


@pytest.mark.book
@pytest.mark.skipif(not REAL_WITH_SOLUTIONS, reason="no chapter notebook with a solution cell yet")
@pytest.mark.timeout(1800)
def test_student_edition_of_the_real_book(tmp_path):
    """The real book's student edition builds (from the committed outputs) and shows no solution code."""
    out = tmp_path / "student"
    assert student.main(["--out", str(out), "--book-root", str(REPO_ROOT), "--execute", "never"]) == 0
    html = out / "_build" / "html"
    for path in REAL_WITH_SOLUTIONS:
        original = nbformat.read(path, as_version=4)
        page = page_text(html / "notebooks" / f"{path.stem}.html")
        assert STUB_MESSAGE in page, path.name
        assert "BEGIN SOLUTION" not in (html / "_sources" / "notebooks" / path.name).read_text(), path.name
        # A chapter may show the package's own source (inspect.getsource) in an output before its exercise;
        # code that appears there is part of the chapter, not a leaked solution.
        staged = nbformat.read(out / "_source" / "notebooks" / path.name, as_version=4)  # what the page shows
        shown = _normal(" ".join(output_text(c) for c in staged.cells if c.cell_type == "code"))
        for answer in solution_regions(original) + answers(original):
            if _normal(answer) not in shown:
                assert _normal(answer) not in page, f"{path.stem}.html shows a solution:\n{answer}"


def output_text(cell) -> str:
    """The text of a code cell's outputs (streams, plain text, HTML with its tags removed)."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", "") if isinstance(output.get("text", ""), str) else "".join(output["text"]))
        for mime, value in output.get("data", {}).items():
            value = value if isinstance(value, str) else "".join(value) if isinstance(value, list) else ""
            if mime == "text/html":
                parser = _Text()
                parser.feed(value)
                value = " ".join(parser.parts)
            if mime.startswith("text/"):
                parts.append(value)
    return " ".join(parts)
