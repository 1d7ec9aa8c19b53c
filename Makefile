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

# The exact versions CI tested: constraints.txt, used with the Python version it was resolved with (its first
# line); with another Python, or with `make install CONSTRAINTS=`, pip chooses within requirements.txt's
# lower bounds instead.
VENV_PYTHON    := $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
PYTHON_VERSION := $(shell $(VENV_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
CONSTRAINTS    ?= $(if $(shell grep -sx '\# Resolved with Python $(PYTHON_VERSION)' constraints.txt),constraints.txt)

.PHONY: book test install execute student grade clean weights constraints

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . $(JB_FLAGS)
	@echo "Book built: open _build/html/index.html"

test: $(STAMP)
	$(BIN)/python -m pytest

# Re-execute the chapter notebooks in place, so the committed outputs are the current code's. No execution
# timestamps: none are recorded, and any left by another tool are stripped, so a re-run changes only outputs.
NOTEBOOKS = notebooks/*.ipynb book/*.ipynb
execute: $(STAMP)
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.record_timing=False $(NOTEBOOKS)
	$(BIN)/python -c "import sys, nbformat; nbs = {p: nbformat.read(p, as_version=4) for p in sys.argv[1:]}; \
	[c.metadata.pop('execution', None) for nb in nbs.values() for c in nb.cells]; \
	[nbformat.write(nb, p) for p, nb in nbs.items()]" $(NOTEBOOKS)

# Retrain the weights that ship in the package (src/resnet_arcface/models/weights/: synthetic.pt and synthetic.json)
# on 2 CPU threads: the small network with ArcFace, plus softmax and CosFace on the same budget, each from the
# training seeds 0, 1 and 2 (learn.recipe.SEEDS; their spread goes into the JSON); seed 0's ArcFace network ships.
weights: $(STAMP)
	$(BIN)/arcface-weights --threads 2

# Coursework (book/instructors.md). The student edition: stubbed notebooks in student/notebooks/ and the
# HTML book with solutions hidden in student/_build/html. The instructor edition is `make book`.
student: $(STAMP)
	$(BIN)/arcface-student --out student --jb-flags="$(JB_FLAGS)"
	@echo "Student edition: notebooks in student/notebooks/, book in student/_build/html/index.html"

# Grade completed notebooks: make grade SUBMISSIONS=dir [GRADES=grades/grades.csv] [TIMEOUT=120] [JOBS=1]
# It RUNS the learners' code: use a throwaway container or VM, or a user without network or secrets.
GRADES  ?= grades/grades.csv
TIMEOUT ?= 120
JOBS    ?= 1
grade: $(STAMP)
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=dir [GRADES=$(GRADES)] [TIMEOUT=$(TIMEOUT)] [JOBS=$(JOBS)]"; exit 2; }
	$(BIN)/arcface-grade "$(SUBMISSIONS)" --out "$(GRADES)" --timeout $(TIMEOUT) --jobs $(JOBS)

# Refresh constraints.txt: resolve requirements.txt afresh (the newest versions its bounds allow) in a
# throwaway venv and pin what was installed, keeping the file's header. torch and its CUDA wheels are left
# out (each machine installs its own build first); TORCH says which build to resolve against, e.g.
#   make constraints TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
# Then review the diff, run `make test`, and commit constraints.txt (CONTRIBUTING.md, "Updating the toolchain").
TORCH ?= torch
constraints:
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install --quiet $(TORCH); \
	"$$tmp/venv/bin/python" -m pip install --quiet -r requirements.txt; \
	version=$$("$$tmp/venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	sed -e '/^[^#]/,$$d' -e "1s/.*/# Resolved with Python $$version/" constraints.txt > "$$tmp/constraints.txt"; \
	"$$tmp/venv/bin/python" -m pip freeze --exclude-editable \
	    | grep -viE '^(torch|triton|resnet-arcface)==|^nvidia-' >> "$$tmp/constraints.txt"; \
	mv "$$tmp/constraints.txt" constraints.txt
	@echo "constraints.txt refreshed: review 'git diff constraints.txt', run 'make test', commit"

clean:
	rm -rf _build
