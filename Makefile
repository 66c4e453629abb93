# The same targets for people and CI. The first use creates .venv and installs into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo serve test lint imports typecheck pytest bench loadtest capacity browser lock clean

# Everything is installed from the lock file (exact versions, with hashes); the project
# itself on top, without resolving anything again. `make lock` writes the lock anew from
# pyproject.toml after a dependency changes there.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --universal \
		--python-version 3.11 --quiet -o requirements.lock

demo: $(STAMP)
	$(BIN)/newretail demo

serve: $(STAMP)
	$(BIN)/newretail serve

lint: $(STAMP)
	$(BIN)/ruff check .

# The layout's import rules ([tool.importlinter] in pyproject.toml).
imports: $(STAMP)
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Browser tests drive Debian's Chromium; as root it is installed when missing,
# otherwise those tests are skipped with the reason printed.
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

pytest: $(STAMP) browser
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint imports typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m loadtests.bench $(BENCH_ARGS)

loadtest: $(STAMP)
	$(BIN)/python -m loadtests.run $(LOADTEST_ARGS)

# How much of a live sale the service holds within its budget: the steps of
# loadtests/steps.toml, a table and plot in loadtests/results/capacity.{md,png}.
capacity: $(STAMP)
	$(BIN)/python -m loadtests.capacity $(CAPACITY_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
