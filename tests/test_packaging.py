"""The package as an installer sees it: what the core needs, what the extras bring, what the files promise.

The core (the network, training, verification, deployment) must run with torch and numpy alone; every other
library comes with an extra of ``pyproject.toml``, and a missing one is named with the extra that installs it.
``requirements.txt`` (lower bounds, for readers) installs everything; ``constraints.txt`` pins what it
resolved to (what CI installs with). And the repository stands alone: no file points outside it.
"""
import ast
import functools
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import resnet_arcface
from resnet_arcface._optional import DISTRIBUTIONS

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(resnet_arcface.__file__).resolve().parents[1]  # the src/ this test imports (the code under test)


@functools.lru_cache(maxsize=None)
def project() -> dict:
    """``pyproject.toml``'s ``[project]`` table (the tests that read it skip before Python 3.11 without tomli)."""
    try:
        import tomllib
    except ModuleNotFoundError:
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

#: Every library outside the core's torch and numpy that some module of the package (or its dependencies)
#: could reach for. The core must run with all of them missing.
OPTIONAL = ("matplotlib", "skimage", "sklearn", "scipy", "PIL", "tqdm", "torchinfo", "nbformat", "nbclient",
            "nbconvert", "yaml", "IPython", "ipykernel", "onnx", "onnxruntime", "onnxscript")

# Run in a fresh interpreter with the OPTIONAL libraries made unimportable, as on a machine where only
# `pip install resnet-arcface` (torch and numpy) was run. argv[1]: the libraries, comma-separated.
CORE_ONLY = textwrap.dedent('''
    import importlib, pkgutil, sys, tempfile
    from pathlib import Path

    BLOCKED = set(sys.argv[1].split(","))
    # None in sys.modules is Python's own "not importable": `import PIL` raises ModuleNotFoundError (name "PIL")
    # and importlib.util.find_spec("PIL") returns None, as torch's optional-import probes expect of a missing
    # library (a finder that raised instead would break them).
    assert not BLOCKED & set(sys.modules), "imported before the block"
    sys.modules.update(dict.fromkeys(BLOCKED))
    try:
        import PIL
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the blocker does not block")

    import torch
    torch.set_num_threads(1)
    import resnet_arcface
    from resnet_arcface import evaluate, fit, resnet_arcface_small, synthetic_faces

    # Every module outside the teaching tools imports (walk_packages imports each package on its way).
    core = [m.name for m in pkgutil.walk_packages(resnet_arcface.__path__, "resnet_arcface.")
            if not m.name.startswith("resnet_arcface.teach")]
    for name in core:
        importlib.import_module(name)

    # Build, train one tiny epoch, verify: the core's whole path.
    model = resnet_arcface_small()
    images, labels = synthetic_faces(4, 4, size=32, seed=0)
    fit(model, images, labels, epochs=1, batch_size=8, progress=False, device="cpu")
    result = evaluate(model, *synthetic_faces(3, 3, size=32, seed=1))
    assert 0.0 <= result["auc"] <= 1.0, result

    # What needs an extra says which one.
    def names_extra(call, extra):
        try:
            call()
        except ImportError as err:
            assert f'pip install "resnet-arcface[{extra}]"' in str(err), f"unclear: {err}"
        else:
            raise AssertionError(f"{call} ran without its extra")

    names_extra(lambda: importlib.import_module("resnet_arcface.teach.viz"), "book")
    names_extra(lambda: importlib.import_module("resnet_arcface.teach.summary").model_summary(model, (1, 1, 32, 32)),
                "book")
    names_extra(lambda: resnet_arcface.lfw_faces(2), "data")
    names_extra(lambda: resnet_arcface.astronaut_face(), "data")
    photos = Path(tempfile.mkdtemp())  # two people, one file each: the scan needs no Pillow, decoding does
    for person in ("a", "b"):
        (photos / person).mkdir()
        (photos / person / "1.png").write_bytes(b"not decoded before Pillow is asked for")
    names_extra(lambda: resnet_arcface.data.read_image_folder(photos, 32), "data")
    names_extra(lambda: resnet_arcface.data.write_image_folder(images, labels, photos / "out"), "data")
    names_extra(lambda: fit(model, images, labels, epochs=1, batch_size=8, progress=True, device="cpu"), "data")
    names_extra(lambda: resnet_arcface.deploy.inference.export_onnx(model.eval(), 32), "fast")

    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m] is not None)
    assert not loaded, f"loaded despite the block: {loaded}"
    print("core-only: ok,", len(core), "modules")
''')


def run_core_only(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src), "RESNET_ARCFACE_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", CORE_ONLY, ",".join(OPTIONAL)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_core_runs_with_torch_and_numpy_alone():
    """Import everything but resnet_arcface.teach, build, fit one epoch and evaluate with every optional library
    missing; the teaching tools, sample faces, photo folders, progress bar and ONNX export name their extra."""
    done = run_core_only(SRC)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "core-only: ok" in done.stdout


@pytest.mark.parametrize("module, mutant", [("data/__init__.py", "import PIL"),
                                            ("learn/training.py", "from tqdm import tqdm")])
def test_the_core_only_check_catches_a_top_level_optional_import(tmp_path, module, mutant):
    """The check above can fail: a copy of the package with an optional library imported at the top does."""
    copy = tmp_path / "src"
    shutil.copytree(SRC / "resnet_arcface", copy / "resnet_arcface",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
    path = copy / "resnet_arcface" / module
    path.write_text(f"{mutant}  # a mutant: an optional library at import time\n" + path.read_text(encoding="utf-8"))
    done = run_core_only(copy)
    top = mutant.split()[1]
    assert done.returncode != 0 and f"import of {top} halted" in done.stderr, done.stderr[-3000:]


# --- pyproject.toml, requirements.txt, constraints.txt ---------------------------------------------------------

def requirement_name(line: str) -> str:
    """The normalised distribution name of one requirement (``"Pillow>=9.0  # why"`` -> ``"pillow"``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    assert match, f"not a requirement: {line!r}"
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirement_lines(path: Path) -> list:
    lines = (line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def extra(name: str) -> set:
    """The distributions an extra brings, with the package's own extras (``resnet-arcface[data]``) expanded."""
    names = set()
    for requirement in project()["optional-dependencies"][name]:
        own = re.fullmatch(r"resnet-arcface\[([a-z,]+)\]", requirement)
        names |= set().union(*(extra(e) for e in own.group(1).split(","))) if own else {requirement_name(requirement)}
    return names


def test_the_core_depends_on_torch_and_numpy_only():
    assert sorted(requirement_name(r) for r in project()["dependencies"]) == ["numpy", "torch"]


def test_requirements_install_every_extra():
    """requirements.txt is what a reader installs: the package (editable) and every extra's libraries."""
    text = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert re.search(r"^-e \.\[all\]", text, re.MULTILINE), "requirements.txt must install the package with every extra"
    listed = {requirement_name(line) for line in requirement_lines(ROOT / "requirements.txt")}
    missing = extra("all") - listed
    assert not missing, f"requirements.txt lacks what the extras need: {sorted(missing)}"
    assert extra("all") == extra("book") | extra("fast") and extra("data") <= extra("book")


def test_constraints_pin_every_requirement_but_torch():
    """constraints.txt pins (==) every library requirements.txt names, except torch (installed first, per machine)."""
    text = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    assert re.match(r"# Resolved with Python 3\.\d+\n", text), "the Makefile reads the Python version on line 1"
    pins = {}
    for line in requirement_lines(ROOT / "constraints.txt"):
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[^\s;]+", line), f"constraints.txt: not an exact pin: {line!r}"
        pins[requirement_name(line)] = line
    assert "torch" not in pins and "resnet-arcface" not in pins
    wanted = {requirement_name(line) for line in requirement_lines(ROOT / "requirements.txt")} - {"torch"}
    assert not wanted - set(pins), f"constraints.txt does not pin: {sorted(wanted - set(pins))}"


def test_every_optional_import_names_an_extra_that_brings_it():
    """Each ``require("module", "extra", ...)`` in the package names an extra that installs that module."""
    calls = []
    for path in sorted((SRC / "resnet_arcface").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require":
                module, extra_name = (arg.value for arg in node.args[:2])
                calls.append((path.name, module, extra_name))
    assert len(calls) >= 8, calls  # the teaching tools, the data loaders, the progress bar, ONNX
    for where, module, extra_name in calls:
        top = module.split(".")[0]
        distribution = requirement_name(DISTRIBUTIONS.get(top, top))
        assert distribution in extra(extra_name), f"{where}: require({module!r}, {extra_name!r}) but [{extra_name}] " \
                                                  f"does not install {distribution}"


def test_console_scripts_resolve():
    """Every command in [project.scripts] points at a callable that exists."""
    import importlib

    for command, target in project()["scripts"].items():
        module, _, attribute = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attribute, None)), f"{command} -> {target}"


# --- The repository stands alone ------------------------------------------------------------------------------

def repository_files() -> list:
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def test_no_file_points_outside_the_repository():
    """No file cites a design document that is not here, or a folder beside the checkout; only .ci/run may name
    the machine's shared data folder (it exports SCIKIT_LEARN_DATA from it)."""
    outside = ["DESIGN" + ".md", "../" + "shared", "shared/" + "data"]
    offenders = []
    for path in repository_files():
        if path.suffix in {".pt", ".png", ".jpg", ".pkz"} or path.relative_to(ROOT).as_posix() == ".ci/run":
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{path.relative_to(ROOT)}: {word}" for word in outside if word in text]
    assert not offenders, offenders


def test_citation_file_is_valid_cff():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors"} <= set(cff) and cff["authors"]
    assert cff["license"] == project()["license"] and cff["version"] == project()["version"]
