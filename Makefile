# Two commands on a fresh machine:  make demo   |   make test
# Both create .venv and install the project into it first (only when pyproject.toml changed).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: demo test test-unit lint bench install clean chromium

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/streamrec demo $(ARGS)

# The browser test drives Debian's Chromium (never a downloaded one): installed once, when
# /usr/bin/chromium is missing and STREAMREC_ALLOW_APT is not false; without it that test skips.
chromium:
	@test -x /usr/bin/chromium || [ "$${STREAMREC_ALLOW_APT:-true}" = false ] || { \
	  S=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing Debian's chromium for the browser test ..."; \
	  { $$S apt-get update -qq && \
	    $$S env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null \
	  || echo "warning: could not install chromium; the browser test will be skipped"; }

# The test session starts (or reuses) the real Kafka broker and Redis itself, once.
test: install chromium
	$(BIN)/python -m pytest $(ARGS)

# The tests that need no service (no broker, no Redis): `-m "not integration"`.
test-unit: install
	$(BIN)/python -m pytest -m "not integration" $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy streamrec tests bench
	$(BIN)/lint-imports

bench: install
	$(BIN)/python bench/foldin.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
