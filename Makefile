# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PLUGINS := plugins/commy_kernel_cffi plugins/commy_kernel_numba plugins/commy_transport_wss plugins/commy_backplane_redis
TEST_PLUGINS := tests/plugins/commy_example_plugin tests/plugins/commy_example_auth
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml $(wildcard plugins/*/pyproject.toml plugins/*/setup.py plugins/*/*/*.c plugins/*/*/_build*.py tests/plugins/*/pyproject.toml)
	@# redis-server: benchmarks and the scale-out tests compare against / run on it.
	command -v redis-server >/dev/null || (command -v apt-get >/dev/null && (apt-get install -y -q redis-server >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null)) ) || echo "warning: redis-server not installed; redis side-by-side figures will be null"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e ".[test]" $(addprefix -e ,$(PLUGINS)) $(addprefix -e ,$(TEST_PLUGINS))
	touch $(STAMP)

demo: install
	$(BIN)/commy demo

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check commy plugins tests

bench: install
	$(BIN)/commy bench local --json
	$(BIN)/commy bench kernels --json

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache .numba_cache
