# The two set-up commands of the README:
#   make expand PROMPT="1girl, forest"   install and run the main job on the built-in model
#   make test                            install everything and run lint, types and tests
PYTHON ?= python3
PIP = $(PYTHON) -m pip
PROMPT ?= 1girl, forest

.PHONY: install install-dev expand test lint bench

install:
	$(PIP) install -q -e ".[llama]"

install-dev:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[llama,hf,image,train,eval,ui,safety-image,ray,dev]"

expand: install
	$(PYTHON) -m tipo expand "$(PROMPT)"

lint:
	$(PYTHON) -m ruff check tipo models eval tests plugins
	$(PYTHON) -m mypy

test: install-dev lint
	$(PYTHON) -m pytest -q
