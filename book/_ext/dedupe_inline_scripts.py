"""Drop duplicate inline <script> blocks from every HTML page.

Sphinx 7.4 lists an inline script twice when an extension adds it after the builder started
(``app.add_js_file(None, body=...)`` in ``env-before-read-docs``, as sphinx-thebe and
sphinx-togglebutton do): once as filename ``None`` and once, re-read from the registry, as ``''``.
The second copy of sphinx-thebe's ``const THEBE_JS_URL = ...`` is an uncaught SyntaxError on every
page ("Identifier 'THEBE_JS_URL' has already been declared"), which tests/test_browser.py catches.
"""
from __future__ import annotations


def _key(js):
    attributes = getattr(js, "attributes", {}) or {}
    return (getattr(js, "filename", js) or "", getattr(js, "priority", None), tuple(sorted(attributes.items())))


def dedupe_script_files(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        key = _key(js)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", dedupe_script_files, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
