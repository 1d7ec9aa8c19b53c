"""The published book, tested in a real browser, offline.

The book is built once (``built_book``), served from `_build/html` on 127.0.0.1 (``book_site``) and
read in headless Debian Chromium through Playwright (``chromium``); see tests/book_fixtures.py.
Every request to a host other than 127.0.0.1/localhost is aborted, and a test fails if a page even
tries one, so passing tests show the book is readable with no network (MathJax included).
Without a Chromium on the machine these tests are skipped, saying so.

What is checked, for every page of `_toc.yml`:
  * it loads (HTTP 200) with no console error, no uncaught exception, no failed local request and
    no attempt to reach another host;
  * every <img> has loaded (``naturalWidth > 0``), including images in collapsed dropdowns;
  * no cell output shows an error: no ``.output.traceback`` / ``.output.error``, no ANSI-red text, no
    "Traceback (most recent call last)" in a cell output. The exception, by decision: cells tagged
    ``raises-exception`` (CONTRIBUTING.md), which render with class ``tag_raises-exception``, are
    *meant* to show their error, so their tracebacks are allowed - and required: such a cell that
    shows no traceback fails the test, since its lesson (an error message) would be missing;
  * every equation is typeset by MathJax (``mjx-container``; no raw TeX left, no ``mjx-merror``, no
    MathJax font that failed to load), with the network blocked;
  * a full-page screenshot goes to test-artifacts/screenshots/ (gitignored).
For every chapter (the notebooks): previous/next navigation lands on the neighbouring toc pages;
each exercise solution (sphinx-exercise ``:class: dropdown``, made collapsible by
sphinx-togglebutton) starts hidden and unfolds on click; a code cell's copy button
(sphinx-copybutton) puts the code on the clipboard; the download button serves a valid nbformat-4
notebook; the Colab, Binder and repository buttons point at `repository.url` of `_config.yml`.
And for the book: the search page finds the IRBlock chapter for "PReLU", and some page has math.
"""
from __future__ import annotations

import dataclasses
import re
from urllib.parse import urlparse

import nbformat
import pytest

from book_fixtures import ARTIFACTS, book_config, chapter_docnames, toc_docnames

pytestmark = [pytest.mark.book, pytest.mark.browser]

TOC = toc_docnames()
CHAPTERS = chapter_docnames()
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
SCREENSHOTS = ARTIFACTS / "screenshots"
SEARCH_TERM, SEARCH_TARGET = "PReLU", "notebooks/05_ir_block"
TIMEOUT_MS = 20_000

# --------------------------------------------------------------------------- in-page probes
IMAGES_JS = """async () => {
  const imgs = [...document.images];
  imgs.forEach(img => { img.loading = 'eager'; });   // lazy or hidden images load too
  await Promise.all(imgs.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener('load', done); img.addEventListener('error', done); setTimeout(done, 10000);
  })));
  return imgs.filter(img => !(img.complete && img.naturalWidth > 0))
             .map(img => img.getAttribute('src') || '(no src)');
}"""

OUTPUTS_JS = """() => {
  const allowed = el => el.closest('.tag_raises-exception') !== null;
  const text = el => el.textContent.trim().replace(/\\s+/g, ' ').slice(0, 160);
  const errors = [];
  for (const el of document.querySelectorAll(
      '.output.traceback, .output.error, .cell_output [class*="ansi-red"]')) {
    if (!allowed(el)) errors.push(text(el));
  }
  for (const el of document.querySelectorAll('.cell_output')) {
    if (!allowed(el) && el.textContent.includes('Traceback (most recent call last)')) errors.push(text(el));
  }
  const silent = [...document.querySelectorAll('.cell.tag_raises-exception')]
    .filter(cell => !cell.querySelector('.output.traceback, .output.error'))
    .map(cell => text(cell.querySelector('.cell_input') || cell));
  return {errors: [...new Set(errors)], silent};
}"""

MATH_JS = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  await document.fonts.ready;
  const math = [...document.querySelectorAll('.math')];
  return {
    equations: math.length,
    rendered: document.querySelectorAll('mjx-container').length,
    raw: math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.trim().slice(0, 80)),
    merror: [...document.querySelectorAll('mjx-merror')].map(e => e.getAttribute('data-mjx-error') || e.textContent),
    font_errors: [...document.fonts].filter(f => f.status === 'error').map(f => f.family),
  };
}"""


# --------------------------------------------------------------------------- an offline browser
@dataclasses.dataclass
class Visit:
    page: object
    status: int | None
    console_errors: list
    page_errors: list
    failed_requests: list


class OfflineBrowser:
    """A fresh Chromium context whose only network is the book's local server."""

    def __init__(self, chromium, base_url: str):
        self.base_url = base_url
        self.blocked: list[str] = []
        self.context = chromium.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url.rstrip("/"))
        self.context.route("**/*", self._only_localhost)

    def _only_localhost(self, route):
        url = route.request.url
        if urlparse(url).hostname in LOCAL_HOSTS or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")

    def url(self, docname: str, query: str = "") -> str:
        return f"{self.base_url}{docname}.html{query}"

    def open(self, docname: str, query: str = "") -> Visit:
        page = self.context.new_page()
        console_errors, page_errors, failed = [], [], []
        page.on("console", lambda m: console_errors.append(f"{m.text} ({m.location.get('url', '')})")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: page_errors.append(str(e)))
        page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}")
                if urlparse(r.url).hostname in LOCAL_HOSTS else None)
        page.on("response", lambda r: failed.append(f"{r.url}: HTTP {r.status}") if r.status >= 400 else None)
        response = page.goto(self.url(docname, query), wait_until="load")
        page.evaluate(MATH_JS)  # let MathJax finish typesetting before anyone looks
        return Visit(page, response.status if response else None, console_errors, page_errors, failed)

    def close(self):
        self.context.close()


@pytest.fixture
def offline(chromium, book_site):
    browser = OfflineBrowser(chromium, book_site)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def page_reports(chromium, book_site):
    """Load each toc page once, record everything the per-page tests assert on."""
    reports: dict[str, dict] = {}

    def report(docname: str) -> dict:
        if docname not in reports:
            browser = OfflineBrowser(chromium, book_site)
            try:
                visit = browser.open(docname)
                page = visit.page
                r = {
                    "status": visit.status,
                    "images": page.evaluate(IMAGES_JS),
                    "outputs": page.evaluate(OUTPUTS_JS),
                    "math": page.evaluate(MATH_JS),
                }
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=SCREENSHOTS / f"{docname.replace('/', '__')}.png", full_page=True)
                # read last: everything the page did while loading, rendering and being measured
                r.update(console_errors=visit.console_errors, page_errors=visit.page_errors,
                         failed_requests=visit.failed_requests, blocked=list(browser.blocked))
                reports[docname] = r
            finally:
                browser.close()
        return reports[docname]

    return report


def _neighbours(docname: str):
    i = TOC.index(docname)
    return (TOC[i - 1] if i > 0 else None), (TOC[i + 1] if i + 1 < len(TOC) else None)


# --------------------------------------------------------------------------- every toc page
@pytest.mark.parametrize("docname", TOC)
def test_page_loads_offline_without_errors(page_reports, docname):
    r = page_reports(docname)
    assert r["status"] == 200, f"{docname}.html answered HTTP {r['status']}"
    assert not r["blocked"], f"{docname} tried to reach the network (blocked): {r['blocked']}"
    assert not r["page_errors"], f"uncaught JavaScript errors on {docname}: {r['page_errors']}"
    assert not r["failed_requests"], f"failed requests on {docname}: {r['failed_requests']}"
    assert not r["console_errors"], f"console errors on {docname}: {r['console_errors']}"


@pytest.mark.parametrize("docname", TOC)
def test_every_image_loads(page_reports, docname):
    broken = page_reports(docname)["images"]
    assert not broken, f"images on {docname} that did not load: {broken}"


@pytest.mark.parametrize("docname", TOC)
def test_no_cell_output_shows_an_error(page_reports, docname):
    outputs = page_reports(docname)["outputs"]
    assert not outputs["errors"], (
        f"cell outputs on {docname} show an error (tag the cell raises-exception if it is meant to): "
        f"{outputs['errors']}"
    )
    assert not outputs["silent"], f"cells tagged raises-exception on {docname} show no error: {outputs['silent']}"


@pytest.mark.parametrize("docname", TOC)
def test_math_is_typeset_offline(page_reports, docname):
    m = page_reports(docname)["math"]
    assert not m["raw"], f"equations left as raw TeX on {docname}: {m['raw']}"
    assert m["rendered"] >= m["equations"], f"{docname}: {m['rendered']} of {m['equations']} equations typeset"
    assert not m["merror"], f"MathJax errors on {docname}: {m['merror']}"
    assert not m["font_errors"], f"fonts that failed to load on {docname}: {m['font_errors']}"


def test_some_page_renders_an_equation(page_reports):
    rendered = {d: page_reports(d)["math"]["rendered"] for d in TOC}
    assert any(rendered.values()), f"no page of the book renders an equation (mjx-container): {rendered}"


# --------------------------------------------------------------------------- chapters
@dataclasses.dataclass
class Chapter:
    docname: str
    browser: OfflineBrowser
    visit: Visit

    @property
    def page(self):
        return self.visit.page

    def assert_still_clean(self):
        assert not self.visit.page_errors, f"uncaught JavaScript errors on {self.docname}: {self.visit.page_errors}"
        assert not self.browser.blocked, f"{self.docname} reached for the network: {self.browser.blocked}"


@pytest.fixture(scope="module", params=CHAPTERS)
def chapter(request, chromium, book_site):
    """Each chapter loaded once; pytest groups the chapter tests below by chapter."""
    browser = OfflineBrowser(chromium, book_site)
    yield Chapter(request.param, browser, browser.open(request.param))
    browser.close()


def test_exercise_solutions_are_hidden_until_clicked(chapter):
    page = chapter.page
    assert page.locator(".exercise").count() >= 1, f"{chapter.docname} has no exercise (sphinx-exercise)"
    every_solution = page.locator(".solution.admonition")
    assert every_solution.count() >= 1, f"{chapter.docname} has no solution (sphinx-exercise)"
    unfolded = [every_solution.nth(i).locator(":scope > .admonition-title").inner_text().strip()
                for i in range(every_solution.count())
                if "dropdown" not in (every_solution.nth(i).get_attribute("class") or "").split()]
    assert not unfolded, f"{chapter.docname}: {unfolded} shown unfolded; give each solution `:class: dropdown`"
    solutions = page.locator(".solution.dropdown")
    for i in range(solutions.count()):
        solution = solutions.nth(i)
        body = solution.locator(":scope > :not(.admonition-title)").first
        title = solution.locator(":scope > .admonition-title").inner_text().strip()
        solution.scroll_into_view_if_needed()
        assert not body.is_visible(), f"{chapter.docname}: '{title}' is visible before it is clicked"
        solution.locator("button.toggle-button").click()
        body.wait_for(state="visible")
        assert "toggle-hidden" not in (solution.get_attribute("class") or "")
    chapter.assert_still_clean()


def test_code_cell_copy_button(chapter):
    page = chapter.page
    block = page.locator(".cell_input div.highlight").first
    block.scroll_into_view_if_needed()
    block.hover()
    button = block.locator("button.copybtn")
    button.wait_for(state="visible")
    page.evaluate("navigator.clipboard.writeText('')")
    button.click()
    page.wait_for_function("b => b.classList.contains('success')", arg=button.element_handle())
    copied = page.evaluate("navigator.clipboard.readText()")
    expected = block.locator("pre").inner_text()
    assert copied.strip() == expected.strip(), f"clipboard holds {copied[:200]!r}, the cell {expected[:200]!r}"
    chapter.assert_still_clean()


def test_download_button_serves_the_notebook(chapter):
    page = chapter.page
    page.locator(".dropdown-download-buttons button.dropdown-toggle").click()
    link = page.locator("a.btn-download-source-button")
    link.wait_for(state="visible")
    href = link.get_attribute("href")
    assert href.endswith(f"{chapter.docname.split('/')[-1]}.ipynb"), f"download link is {href}"
    got = page.evaluate("async h => { const r = await fetch(h); return [r.status, await r.text()]; }", href)
    assert got[0] == 200, f"{href}: HTTP {got[0]}"
    nb = nbformat.reads(got[1], as_version=nbformat.NO_CONVERT)
    assert nb.nbformat == 4
    nbformat.validate(nb)
    assert any(c.cell_type == "code" for c in nb.cells)
    page.keyboard.press("Escape")
    chapter.assert_still_clean()


def test_launch_and_repository_buttons(chapter):
    cfg = book_config()
    repo_url = cfg["repository"]["url"].rstrip("/")
    org_repo = urlparse(repo_url).path.strip("/")
    branch = cfg["repository"].get("branch", "main")
    prefix = (cfg["repository"].get("path_to_book") or "").strip("/")
    path = f"{prefix}/{chapter.docname}.ipynb" if prefix else f"{chapter.docname}.ipynb"
    launch = cfg["launch_buttons"]
    expected = {
        "Colab": f"{launch['colab_url'].rstrip('/')}/github/{org_repo}/blob/{branch}/{path}",
        "Binder": f"{launch['binderhub_url'].rstrip('/')}/v2/gh/{org_repo}/{branch}?urlpath=tree/{path}",
    }
    page = chapter.page
    page.locator(".dropdown-launch-buttons button.dropdown-toggle").click()
    for name, href in expected.items():
        link = page.locator(f'.dropdown-launch-buttons a[href="{href}"]')
        assert link.count() == 1, f"{chapter.docname}: no {name} launch button to {href}"
        link.wait_for(state="visible")
        assert name in link.inner_text()
    page.keyboard.press("Escape")
    repo_button = page.locator("a.btn-source-repository-button")
    assert repo_button.get_attribute("href").rstrip("/") == repo_url
    chapter.assert_still_clean()


def test_previous_and_next_navigation(chapter):
    """Next lands on the next toc page and its Previous comes back; the first chapter's Previous too."""
    prev_doc, next_doc = _neighbours(chapter.docname)
    page, url = chapter.page, chapter.browser.url
    if next_doc:
        page.locator("a.right-next").click()
        page.wait_for_url(url(next_doc))
        page.locator("a.left-prev").click()
        page.wait_for_url(url(chapter.docname))
    if prev_doc and prev_doc not in CHAPTERS:  # a chapter's Previous is tested from that chapter
        page.locator("a.left-prev").click()
        page.wait_for_url(url(prev_doc))
        page.locator("a.right-next").click()
        page.wait_for_url(url(chapter.docname))
    chapter.assert_still_clean()


# --------------------------------------------------------------------------- the book
def test_search_finds_the_irblock_chapter(offline):
    visit = offline.open("search", f"?q={SEARCH_TERM}")
    page = visit.page
    page.locator("#search-results ul.search li a").first.wait_for(timeout=TIMEOUT_MS)
    hrefs = page.locator("#search-results ul.search li a").evaluate_all("as => as.map(a => a.href)")
    assert any(f"{SEARCH_TARGET}.html" in h for h in hrefs), f"searching {SEARCH_TERM!r} found {hrefs}"
    assert not visit.page_errors, f"uncaught JavaScript errors on the search page: {visit.page_errors}"
    assert not visit.console_errors, f"console errors on the search page: {visit.console_errors}"
    assert not offline.blocked, f"the search page tried to reach the network: {offline.blocked}"
