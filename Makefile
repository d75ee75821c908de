# Threadgate — `make dev` runs the gateway locally, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: dev test bench bench-peer synth deploy layers clean

# The package is imported from where the Lambda layer ships it (layers/threadgate/python):
# a .pth file puts that directory on the venv's path, so there is no second copy to drift.
$(VENV)/.runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -c "import site,os; open(os.path.join(site.getsitepackages()[0],'threadgate-layer.pth'),'w').write(os.path.abspath('layers/threadgate/python')+'\n')"
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

dev: $(VENV)/.runtime
	$(BIN)/python -m threadgate serve

# pytest exits 5 when it collects no test: that is a failure of the suite, not a pass.
test: $(VENV)/.dev
	$(BIN)/python -m pytest -n 2 --dist loadfile tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

bench: $(VENV)/.dev
	$(BIN)/python bench/run_all.py

# Threadgate next to LiteLLM's proxy (installs LiteLLM into bench/.peers/ once); needs a quiet machine.
bench-peer: $(VENV)/.dev
	$(BIN)/python bench/peer_bench.py

# AWS bundle (docs/deploy.md). The deps layer is built from manylinux wheels for the Lambda
# architecture with pip, no Docker; the CDK CLI is pinned in package.json.
layers: $(VENV)/.dev
	$(BIN)/python scripts/build_layers.py

node_modules/.bin/cdk: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

synth: layers node_modules/.bin/cdk
	node_modules/.bin/cdk synth --quiet

deploy: layers node_modules/.bin/cdk
	node_modules/.bin/cdk deploy $(CDK_ARGS)

clean:
	rm -rf $(VENV) cdk.out layers/deps/python
