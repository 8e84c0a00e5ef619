# Two commands from a fresh clone: `make demo` (convert, serve, call, load-test, stop) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# pyright's own pin (the type checker CI runs over the package: every import resolves).
PYRIGHT := $(VENV)/bin/pyright

.PHONY: venv demo test test-fast typecheck bench serve clean

# The venv is rebuilt when the project's dependencies change. The install is setuptools' strict
# editable mode: a tree of links under build/ that pyright, mypy and editors read like site-packages.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]' --config-settings editable_mode=strict
	touch $@

# Strict mode links the files that existed at install time: a file added or removed since relinks.
SOURCES_LIST := $(VENV)/.sources
$(shell mkdir -p $(VENV) && find tritonize converters client -type f -not -path '*/__pycache__/*' | sort > $(SOURCES_LIST).new \
	&& (cmp -s $(SOURCES_LIST).new $(SOURCES_LIST) || mv $(SOURCES_LIST).new $(SOURCES_LIST)); rm -f $(SOURCES_LIST).new)

$(VENV)/.linked: $(VENV)/.installed $(SOURCES_LIST)
	$(PY) -m pip install -q --no-deps -e . --config-settings editable_mode=strict
	touch $@

venv: $(VENV)/.linked

demo: venv
	HF_HUB_OFFLINE=1 $(PY) -m tritonize demo

test: venv typecheck
	$(PY) -m pytest -q

# The unit tier: no server, no conversion (tests marked `unit`), under 2 minutes.
test-fast: venv
	$(PY) -m pytest -q -m unit

typecheck: venv
	PYRIGHT_PYTHON_IGNORE_WARNINGS=1 $(PYRIGHT) tritonize converters client benchmarks

bench: venv
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.engine_bench

serve: venv
	$(PY) -m tritonize serve

clean:
	rm -rf $(VENV) build model_repository/*/
