# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv and
# installs what it needs; nothing has to be installed by hand but Python 3.10+ and Java 17+.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint check-java check-chromium clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || \
	  { echo "manymodels needs Python 3.10 or newer (found $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv --help >/dev/null 2>&1 && $(PYTHON) -c 'import ensurepip' 2>/dev/null || \
	  { echo "Python's venv module is missing: apt-get install -y python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[local,serve,dev]'
	@touch $(STAMP)

check-java:
	@command -v java >/dev/null 2>&1 || { echo "Spark needs Java 17+: apt-get install -y openjdk-17-jre-headless (or set JAVA_HOME)"; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	  [ "$${v:-0}" -ge 17 ] || { echo "Spark needs Java 17+, found Java $$v: apt-get install -y openjdk-17-jre-headless"; exit 1; }

# The report's browser test drives Debian's Chromium (never a downloaded browser): installed here
# when missing and run as root (CI); otherwise the test is skipped and this says how to get it.
check-chromium:
	@[ -x /usr/bin/chromium ] || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the report's browser test"; \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	  else \
	    echo "the report's browser test needs Chromium (skipped without it): sudo apt-get install -y chromium"; \
	  fi; }

demo: check-java $(STAMP)
	PYSPARK_PYTHON=$(abspath $(BIN))/python $(BIN)/manymodels --home .manymodels demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks jobs
	$(BIN)/ruff format --check src tests benchmarks jobs
	$(BIN)/mypy

# The whole suite on classic local Spark sessions, two pytest workers taking a test file at a
# time (each worker has its own session), while the fault trials (one long test, which xdist
# would hand out last and then run alone) run beside them from the start; the Spark tests
# once more against a local
# Spark Connect server (Databricks serverless and standard-access clusters run Python that way),
# but for those marked classic_only (they start a classic session or use none of its code);
# then the pipeline tests on each declared Databricks runtime's pinned libraries, whose envs are
# built in the background meanwhile (.ci-venvs.log).
PY_ENV := PYSPARK_PYTHON=$(abspath $(BIN))/python
test: check-java check-chromium lint
	@.ci/runtimes --prepare >.ci-venvs.log 2>&1 & prep=$$!; \
	$(PY_ENV) $(BIN)/python -m pytest -q -p no:cacheprovider --basetemp=.ci-trials-tmp tests/reliability >.ci-trials.log 2>&1 & trials=$$!; \
	$(PY_ENV) $(BIN)/python -m pytest -q -n 2 --dist loadfile --ignore=tests/reliability || \
	  { kill $$trials 2>/dev/null; exit 1; }; \
	wait $$trials && tail -n 1 .ci-trials.log || { cat .ci-trials.log; exit 1; }; \
	MANYMODELS_TEST_SPARK=connect $(PY_ENV) $(BIN)/python -m pytest -q -m 'not classic_only' tests/spark && \
	{ wait $$prep || { cat .ci-venvs.log; exit 1; }; } && \
	.ci/runtimes

clean-venv:
	rm -rf $(VENV)
