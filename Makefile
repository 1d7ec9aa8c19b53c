# Two commands do everything on a fresh machine with Python 3 and pip:
#   make book   build the HTML book into _build/html (executes every notebook)
#   make test   package tests, nbval over every notebook, the book build, the browser tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(abspath $(BIN)):$(PATH)
# Sphinx flags: nitpicky, warnings are errors, but report them all before failing.
JB_FLAGS := -W -n --keep-going

.PHONY: book test install execute student clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . $(JB_FLAGS)
	@echo "Book built: open _build/html/index.html"

test: $(STAMP)
	$(BIN)/python -m pytest

# Re-execute the chapter notebooks in place, so the committed outputs are the current code's.
execute: $(STAMP)
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace notebooks/*.ipynb

clean:
	rm -rf _build
