"""Session fixtures for the book tests: build the Jupyter Book once, serve it, drive Chromium.

`tests/conftest.py` imports the fixtures from here, so one build and one browser serve the whole
test session (`tests/test_book_build.py` and `tests/test_browser.py` share them).

* ``built_book``  runs the `make book` command once: ``jupyter-book build . <JB_FLAGS>`` with the
  flags read from the Makefile (``-W -n --keep-going``), plus ``--all`` so that Sphinx re-reads
  every page and reports every warning even when a previous build left an up-to-date doctree.
  Notebook execution stays cached (``execute_notebooks: cache``), so a rebuild does not re-run them.
* ``book_site``   serves ``_build/html`` on 127.0.0.1 (an ``http.server`` thread on a free port).
* ``chromium``    Debian's Chromium driven by Playwright's Python API, never a downloaded browser.
  Without a Chromium on the machine, the browser tests are skipped with a message that says so.
"""
from __future__ import annotations

import dataclasses
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
HTML_DIR = REPO_ROOT / "_build" / "html"
ARTIFACTS = REPO_ROOT / "test-artifacts"
BUILD_TIMEOUT_S = 3600

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
# Flags that keep Chromium off the network on its own (see the machine notes): no background
# connections, no component updates, no sync; --no-sandbox because CI runs as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# --------------------------------------------------------------------------- table of contents
def toc_docnames(root: Path = REPO_ROOT) -> list[str]:
    """Every page of `_toc.yml`, in reading order (root first), as Sphinx docnames."""
    import yaml  # here, not at the top: conftest.py imports this module for every test run

    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    names: list[str] = [_docname(toc["root"])]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(_docname(entry["file"]))
            walk(entry.get("sections"))
            walk(entry.get("chapters"))
            walk(entry.get("parts"))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    walk(toc.get("sections"))
    return names


def _docname(path: str) -> str:
    return re.sub(r"\.(md|ipynb|rst)$", "", str(path))


def chapter_docnames(root: Path = REPO_ROOT) -> list[str]:
    """The notebook chapters (the toc pages under notebooks/)."""
    return [d for d in toc_docnames(root) if d.startswith("notebooks/")]


def book_config(root: Path = REPO_ROOT) -> dict:
    import yaml

    return yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- the build
def makefile_jb_flags(root: Path = REPO_ROOT) -> list[str]:
    """The Sphinx flags `make book` uses (``JB_FLAGS := ...`` in the Makefile): one source of truth."""
    match = re.search(r"^JB_FLAGS\s*:?=\s*(.+)$", (root / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile no longer defines JB_FLAGS; keep tests/book_fixtures.py in step"
    return match.group(1).split()


def jupyter_book_executable() -> str:
    beside = Path(sys.executable).with_name("jupyter-book")
    if beside.exists():
        return str(beside)
    found = shutil.which("jupyter-book")
    if not found:
        pytest.fail("jupyter-book is not installed: run `make install` (pip install -r requirements.txt)")
    return found


@dataclasses.dataclass
class BookBuild:
    command: list[str]
    returncode: int
    log: str
    seconds: float
    html_dir: Path

    @property
    def warnings(self) -> list[str]:
        """Sphinx's warnings and errors in the log (``path:line: WARNING: ...``), ANSI colours stripped.

        A kernel's own log lines (``[IPKernelApp] WARNING | ...``) are not Sphinx warnings."""
        plain = re.sub(r"\x1b\[[0-9;]*m", "", self.log)
        return [line for line in plain.splitlines() if re.search(r"(^|\s)(WARNING|ERROR|CRITICAL): ", line)]

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", self.log).splitlines()[-n:])


@pytest.fixture(scope="session")
def built_book() -> BookBuild:
    """Build the real book from the repository root, once per test session."""
    cmd = [jupyter_book_executable(), "build", str(REPO_ROOT), *makefile_jb_flags(), "--all"]
    env = dict(os.environ)
    # The notebook kernel and the build's tools come from the same environment as pytest.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # A kernel given MPLBACKEND=Agg draws figures nowhere: the chapters would lose their plots.
    env.pop("MPLBACKEND", None)
    start = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=BUILD_TIMEOUT_S,
    )
    build = BookBuild(cmd, proc.returncode, proc.stdout, time.monotonic() - start, HTML_DIR)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "book-build.log").write_text(proc.stdout, encoding="utf-8")
    return build


# --------------------------------------------------------------------------- serving it
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".ipynb": "application/x-ipynb+json",
        ".woff": "font/woff",
        ".woff2": "font/woff2",
        ".js": "text/javascript",
        ".json": "application/json",
    }

    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture(scope="session")
def book_site(built_book):
    """Base URL (ending in '/') of `_build/html` served on 127.0.0.1."""
    if not (built_book.html_dir / "index.html").exists():
        pytest.fail(
            f"the book build produced no HTML (exit {built_book.returncode}); its log ends:\n"
            + built_book.log_tail()
        )
    handler = functools.partial(_QuietHandler, directory=str(built_book.html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="book-http", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------- the browser
def find_chromium() -> str | None:
    if os.path.exists("/usr/bin/chromium"):
        return "/usr/bin/chromium"
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium():
    """A headless Debian Chromium, launched once; skips the test when none is installed."""
    executable = find_chromium()
    if executable is None:
        pytest.skip(
            "No Chromium found (neither /usr/bin/chromium nor chromium on PATH): the browser tests "
            "need Debian's Chromium (`apt-get install chromium`; .ci/run installs it)."
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed (pip install -r requirements.txt)"
    )
    playwright = sync_api.sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()
    playwright.stop()
