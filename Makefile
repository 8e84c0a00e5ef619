# Two commands from a fresh clone: `make demo` (convert, serve, call, stop) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: venv demo test bench serve clean

# The venv is rebuilt when the project's dependencies change.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	HF_HUB_OFFLINE=1 $(PY) -m tritonize demo

test: venv
	$(PY) -m pytest -q

bench: venv
	HF_HUB_OFFLINE=1 $(PY) -m tritonize.benchmarks.engine_bench

serve: venv
	$(PY) -m tritonize serve

clean:
	rm -rf $(VENV) model_repository/*/
