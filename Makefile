# Two commands: `make demo` and `make test`. Each creates .venv if missing and
# installs only when pyproject.toml (or the C kernel) changed (stamp files), so re-runs are cheap.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
OUT    ?= demo_out
FASTAI := .venv-fastai
CSCRIPTS := .venv-cityscapes

.PHONY: demo test lint format bench bench-real notebook clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The install builds the evaluator's C kernel (src/bddseg/_fastpng.c) when a C compiler is
# there; without one bddseg still works, slower, and says so here.
KERNEL := $(PY) -c "import bddseg.fastpng as f; f.available() or print('note: no C compiler: bddseg.fastpng not built; evaluate decodes masks through pyspng (about 4x slower)')"

$(VENV)/.stamp-base: pyproject.toml setup.py src/bddseg/_fastpng.c | $(PY)
	$(PIP) install -e .
	$(KERNEL)
	touch $@

$(VENV)/.stamp-test: pyproject.toml setup.py src/bddseg/_fastpng.c | $(PY)
	$(PIP) install -e '.[test]'
	$(KERNEL)
	touch $@ $(VENV)/.stamp-base

demo: $(VENV)/.stamp-base
	$(VENV)/bin/bddseg demo --out $(OUT)

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check setup.py src tests benchmarks notebooks
	$(VENV)/bin/ruff format --check setup.py src tests benchmarks

format: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check --fix setup.py src tests benchmarks notebooks
	$(VENV)/bin/ruff format setup.py src tests benchmarks

test: lint $(CSCRIPTS)/.stamp
	$(PY) -m pytest -q

bench: $(VENV)/.stamp-test
	$(PY) benchmarks/run_all.py

# bddseg's CPU recipes against the original fastai recipe on the real BDD100K sample
# (BDDSEG_SAMPLE_DATA, default ../shared/data/bdd100k-sample): about 35 minutes on 2 cores.
# BENCH_REAL_ARGS="--budget 240" for a shorter run.
bench-real: $(VENV)/.stamp-test $(FASTAI)/.stamp
	$(PY) benchmarks/real_sample.py --out runs/real_sample $(BENCH_REAL_ARGS)

notebook: $(VENV)/.stamp-test
	$(PIP) install -q jupyterlab
	$(VENV)/bin/jupyter lab notebooks/walkthrough.ipynb

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache

# The official BDD100K evaluator in its own venv (it needs pydantic<2), for the `official`
# parity test and benchmarks/eval_speed.py. A prerequisite of nothing: tests use it if present.
OFFICIAL := .venv-official
.PHONY: .venv-official
.venv-official: $(OFFICIAL)/.stamp
$(OFFICIAL)/.stamp:
	rm -rf $(OFFICIAL)
	$(PYTHON) -m venv $(OFFICIAL)
	$(OFFICIAL)/bin/python -m pip --disable-pip-version-check -q install 'bdd100k==1.0.1' 'pydantic<2'
	touch $@

# cityscapesScripts' evaluator in its own venv, for the Cityscapes parity test
# (tests/test_cityscapes_parity.py): it pins nothing of ours, but it pulls nine packages we
# don't use, the obsolete `typing` backport among them, so it stays out of .venv. The `*`
# .gitignore inside it is what Python 3.13's venv writes itself.
.PHONY: .venv-cityscapes
.venv-cityscapes: $(CSCRIPTS)/.stamp
$(CSCRIPTS)/.stamp:
	rm -rf $(CSCRIPTS)
	$(PYTHON) -m venv $(CSCRIPTS)
	$(CSCRIPTS)/bin/python -m pip --disable-pip-version-check -q install 'cityscapesscripts==2.3.0'
	echo '*' > $(CSCRIPTS)/.gitignore
	touch $@

# The original project's recipe (fastai unet_learner + fit_one_cycle) in its own venv, for the
# real-data benchmark (benchmarks/real_sample.py). Same torch as ours; fastai from PyPI.
.PHONY: .venv-fastai
.venv-fastai: $(FASTAI)/.stamp
$(FASTAI)/.stamp:
	rm -rf $(FASTAI)
	$(PYTHON) -m venv $(FASTAI)
	$(FASTAI)/bin/python -m pip --disable-pip-version-check -q install 'fastai==2.8.12' 'torch>=2.4' 'torchvision>=0.19'
	touch $@
