"""The book builds with `make book`'s command (`jupyter-book build . -W -n --keep-going`), warning-free.

The build runs once per test session (the ``built_book`` fixture in tests/book_fixtures.py); the
browser tests in tests/test_browser.py read the same `_build/html`. Its full log is kept in
test-artifacts/book-build.log.
"""
import re
from html.parser import HTMLParser

import pytest

from book_fixtures import book_config, toc_docnames

pytestmark = pytest.mark.book


def test_book_builds_without_warnings(built_book):
    assert built_book.returncode == 0, (
        f"`{' '.join(built_book.command)}` failed (exit {built_book.returncode}).\n"
        "Warnings and errors:\n  " + "\n  ".join(built_book.warnings or ["(none listed)"])
        + "\nEnd of the log:\n" + built_book.log_tail()
    )
    assert built_book.warnings == [], "the build logged warnings:\n  " + "\n  ".join(built_book.warnings)


def test_every_toc_page_is_built(built_book):
    missing = [d for d in toc_docnames() if not (built_book.html_dir / f"{d}.html").exists()]
    assert not missing, f"pages of _toc.yml with no HTML in {built_book.html_dir}: {missing}"


def test_math_is_served_from_the_book_not_a_cdn(built_book):
    """MathJax ships inside the built book (sphinx-mathjax-offline), so equations render offline."""
    static = built_book.html_dir / "_static"
    assert (static / "mathjax" / "tex-chtml.js").is_file(), "MathJax is not copied into _static/mathjax"
    assert (static / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2" / "MathJax_Main-Regular.woff").is_file()
    assert book_config()["sphinx"]["config"]["mathjax_path"] == "mathjax/tex-chtml.js"


class _RemoteLoads(HTMLParser):
    """Collects the resources a page *loads* (not mere links) from another host."""

    LOADED_LINK_RELS = {"stylesheet", "preload", "modulepreload", "icon", "shortcut", "apple-touch-icon"}

    def __init__(self):
        super().__init__()
        self.remote = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "link":
            rels = set((a.get("rel") or "").lower().split())
            url = a.get("href") if rels & self.LOADED_LINK_RELS else None
        elif tag in {"script", "img", "iframe", "source", "video", "audio", "embed"}:
            url = a.get("src")
        else:
            url = None
        if url and re.match(r"^(https?:)?//", url.strip(), re.I):
            self.remote.append(f"<{tag} {url}>")


def test_no_page_loads_scripts_styles_or_images_from_another_host(built_book):
    """Static check over every built page: no <script src>, stylesheet or image off the book.

    Links (<a href>) to the repository, Colab and Binder are fine: they are not loaded with the page.
    The browser tests also block every non-localhost request while the pages load, which covers
    what scripts and stylesheets fetch themselves (fonts, MathJax extensions).
    """
    offenders = {}
    for page in sorted(built_book.html_dir.rglob("*.html")):
        parser = _RemoteLoads()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        if parser.remote:
            offenders[str(page.relative_to(built_book.html_dir))] = parser.remote[:3]
    assert not offenders, f"pages that load resources from another host: {offenders}"
