"""A bibliography style whose labels ignore a year's letter suffix: ``book_alpha``.

He et al. have two 2016 papers in the book. Author-year citations print the ``year`` field as it is, so
``references.bib`` gives them the years ``2016a`` and ``2016b`` ("He et al. [2016a]"). pybtex's alpha labels
take the year's last two characters and would turn those into ``[HZRS6a]``; this style labels with the
four-digit year, and alpha's own rule for equal labels adds the letter back: ``[HZRS16a]``, ``[HZRS16b]``.
"""
from __future__ import annotations

import re

from pybtex.database import Entry
from pybtex.plugin import register_plugin
from pybtex.style.formatting.alpha import Style as AlphaStyle
from pybtex.style.labels.alpha import LabelStyle as AlphaLabelStyle


class YearSuffixLabelStyle(AlphaLabelStyle):
    def format_label(self, entry: Entry) -> str:
        year = entry.fields.get("year", "")
        if re.fullmatch(r"\d{4}[a-z]", year):
            entry = Entry(entry.type, fields={**entry.fields, "year": year[:4]}, persons=entry.persons)
        return super().format_label(entry)


class BookAlphaStyle(AlphaStyle):
    default_label_style = "year_suffix_alpha"


def setup(app):
    register_plugin("pybtex.style.labels", "year_suffix_alpha", YearSuffixLabelStyle)
    register_plugin("pybtex.style.formatting", "book_alpha", BookAlphaStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
