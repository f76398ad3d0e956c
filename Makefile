# The README's two commands are `make repro` (set up, fetch data, run the pipeline) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Stages run papermill, python and dvc from the venv.
export PATH := $(BIN):$(PATH)

.PHONY: setup data repro test smoke bench lab clean-outputs

setup: $(STAMP)  ## create .venv with the pinned dependencies, the package (editable) and the `ifn` kernel

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name ifn --display-name "ifn (.venv)" >/dev/null
	touch $@

data: setup  ## materialise data/ from the DVC remote (../shared/dvc-store)
	$(BIN)/dvc pull data.dvc

repro: data  ## run the whole pipeline (dvc.yaml) with params.yaml
	$(BIN)/dvc repro
	# DVC commits stage outputs to its cache as copies; relink them to the cache so large outputs (the corpus)
	# are not stored twice. Not the train stages: their persistent checkpoints are rewritten in place.
	$(BIN)/dvc checkout --relink -q face_model synthesize evaluate_synthetic evaluate_real

test: data  ## the test suite
	$(BIN)/python -m pytest -q

smoke: data  ## the whole pipeline on tiny sizes (smoke.yaml) in a scratch folder
	$(BIN)/python -m ifn.smoke

bench: setup  ## benchmark tables (printed, not asserted)
	$(BIN)/python bench/render_bench.py
	$(BIN)/python bench/loss_bench.py
	$(BIN)/python bench/train_bench.py

lab: setup  ## JupyterLab on the notebooks
	$(BIN)/jupyter lab notebooks/
