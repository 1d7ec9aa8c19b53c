"""Hygiene of every committed notebook (chapters under notebooks/, pages under book/) and of the bibliography.

These read the files only; nbval (in `make test`) is what executes the notebooks.
"""
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("book/**/*.ipynb")])
MAX_BYTES = 450 * 1024
SOLUTION_DIRECTIVE = re.compile(r"^(::::?\{solution\}|```\{solution-(start|end)\})", re.MULTILINE)


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["repository"]["url"]


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def tags(cell: dict) -> list:
    return cell.get("metadata", {}).get("tags", [])


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_there_are_notebooks():
    assert any(p.parent.name == "notebooks" for p in NOTEBOOKS) and any(p.parent.name == "book" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name)
def test_first_cell_installs_the_package_from_the_configured_repository(path):
    """Colab and Binder open a chapter without the package: cell 0 installs it, and the book hides that cell."""
    first = load(path)["cells"][0]
    assert first["cell_type"] == "code", f"{name(path)}: cell 0 must be the install cell (a code cell)"
    assert "remove-cell" in tags(first), f"{name(path)}: tag cell 0 `remove-cell`, so the book does not show it"
    text = source(first)
    url = repository_url()
    assert f"git+{url}" in text, f"{name(path)}: cell 0 must install from _config.yml's repository.url ({url})"
    assert "find_spec" in text, f"{name(path)}: cell 0 must install only where the package is missing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name)
def test_no_execution_timestamps(path):
    """A re-run must not churn every cell: execute with --ExecutePreprocessor.record_timing=False."""
    stamped = [i for i, cell in enumerate(load(path)["cells"]) if "execution" in cell.get("metadata", {})]
    assert not stamped, f"{name(path)}: cells {stamped} carry metadata.execution timestamps"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name)
def test_notebook_is_small(path):
    size = path.stat().st_size
    assert size <= MAX_BYTES, (f"{name(path)} is {size / 1024:.0f} KB (at most {MAX_BYTES // 1024} KB): "
                               "smaller figures, dpi <= 100, viz.show_photo (JPEG) for photograph-like ones")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name)
def test_no_error_outputs_outside_raises_exception_cells(path):
    cells = load(path)["cells"]
    errors = [i for i, cell in enumerate(cells) if cell["cell_type"] == "code"
              and "raises-exception" not in tags(cell)
              and any(out.get("output_type") == "error" for out in cell.get("outputs", []))]
    assert not errors, f"{name(path)}: cells {errors} show an error; catch it and print one line, or fix it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=name)
def test_solutions_are_whole_tagged_cells(path):
    """The student edition drops cells tagged remove-student; a solution must not share a cell with anything."""
    problems = []
    for i, cell in enumerate(load(path)["cells"]):
        text = source(cell)
        if cell["cell_type"] != "markdown" or not SOLUTION_DIRECTIVE.search(text):
            continue
        if "remove-student" not in tags(cell):
            problems.append(f"cell {i} holds a solution but is not tagged remove-student")
        if ":::{exercise}" in text:
            problems.append(f"cell {i} holds an exercise and a solution")
        if len(SOLUTION_DIRECTIVE.findall(text)) > 1 or not text.lstrip().startswith(("::::{solution}", ":::{solution}", "```{solution-")):
            problems.append(f"cell {i} holds more than one solution directive, or text before it")
    assert not problems, f"{name(path)}: " + "; ".join(problems)


def test_every_reference_links_to_the_paper():
    """Rendered references are links: each entry has a DOI or a URL (arXiv where there is no DOI)."""
    bib = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    entries = re.findall(r"@\w+\{([^,]+),(.*?)\n\}", bib, flags=re.DOTALL)
    assert entries
    missing = [key for key, body in entries if not re.search(r"^\s*(doi|url)\s*=", body, flags=re.MULTILINE)]
    assert not missing, f"references.bib entries without doi or url: {missing}"
