# The two project commands. Each one creates .venv and installs what it needs,
# so a fresh clone needs nothing but python3 (>= 3.11).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m bot demo

# Worker processes for the suite (pytest-xdist): each starts its own Synapse servers and PostgreSQL
# cluster on free loopback ports. TEST_WORKERS=0 runs it in this process, one test after another.
TEST_WORKERS ?= 4

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

bench: $(STAMP)
	$(PY) bench/gate.py
	$(PY) bench/news.py
	$(PY) bench/restart.py
	$(PY) bench/inprocess.py
	$(PY) bench/store.py
	$(PY) bench/replica.py
	$(PY) bench/failover.py
	$(PY) bench/identity.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
