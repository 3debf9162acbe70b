# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Keras/TF print a lot at import; keep the logs readable.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installed marker: re-install when the dependency list changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/geoseg-batch demo --out demo_out

# Test files run on TEST_WORKERS pytest-xdist processes, each file whole in one (its module fixtures built once);
# each process sets TensorFlow's pools to 2 threads (tests/conftest.py). On 2 cores the suite took 17 min so, against
# 24 min in one process (same commit, one after the other): in one, most tests wait on the processes they start
# (clusters, CLI runs, training ranks) and the cores are ~0.8 busy.
TEST_WORKERS ?= 2

test: venv
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) demo_out .pytest_cache
