# The two commands of the README. Each sets up .venv (once) and then runs.
#   make train   train the default language model on Shakespeare (offline), then print a sample
#   make test    run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tzoo-installed

.PHONY: train test install clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/tzoo fit --config configs/lm/shakespeare_char.yaml
	$(BIN)/tzoo generate --ckpt "$$(ls -td runs/lm/version_*/checkpoints/last.ckpt | head -n 1)" \
		--prompt "ROMEO:" --max_new_tokens 500 --top_k 50 --seed 0

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

clean:
	rm -rf $(VENV) runs build dist *.egg-info
