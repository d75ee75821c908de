# Threadgate — `make dev` runs the gateway locally, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: dev chat test bench bench-peer synth deploy layers vendor chromium clean lock catalog

# Installs come from hashed lock files, so a clone next month installs exactly this code:
# requirements.lock (runtime), requirements-dev.lock (+ tools), requirements-layer.lock (Lambda).
# Add a dependency to requirements.txt or requirements-dev.txt (the files people edit), then run
# `make lock` (`make lock UPGRADE=1` moves every pin to the newest allowed version). uv installs
# (resolving nothing, checking every hash) in parallel, several times faster than pip.
UV_VERSION := 0.13.9
UV := $(BIN)/uv
LOCK := $(UV) pip compile --universal --python-version 3.11 --generate-hashes --quiet \
        --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade,)

$(VENV)/.uv:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r requirements-uv.lock
	touch $@

# The package is imported from where the Lambda layer ships it (layers/threadgate/python):
# a .pth file puts that directory on the venv's path, so there is no second copy to drift.
$(VENV)/.runtime: requirements.lock $(VENV)/.uv
	$(UV) pip install -q --python $(BIN)/python --require-hashes -r requirements.lock
	$(BIN)/python -c "import site,os; open(os.path.join(site.getsitepackages()[0],'threadgate-layer.pth'),'w').write(os.path.abspath('layers/threadgate/python')+'\n')"
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.lock
	$(UV) pip install -q --python $(BIN)/python --require-hashes -r requirements-dev.lock
	touch $@

lock: $(VENV)/.uv
	echo "uv==$(UV_VERSION)" | $(LOCK) - -o requirements-uv.lock
	$(LOCK) requirements.txt -o requirements.lock
	$(LOCK) requirements-dev.txt -c requirements.lock -o requirements-dev.lock
	$(BIN)/python scripts/build_layers.py --lock --uv $(UV)

dev: $(VENV)/.runtime
	$(BIN)/python -m threadgate serve

# The reference chat app (examples/chat): its own gateway and data dir, http://127.0.0.1:8090
chat: $(VENV)/.runtime
	$(BIN)/python -m examples.chat

# pytest exits 5 when it collects no test: that is a failure of the suite, not a pass.
test: $(VENV)/.dev node_modules/.bin/cdk chromium
	$(BIN)/python -m pytest -n 2 --dist loadfile tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

# The model catalog from maintained price data (scripts/build_catalog.py): run after bumping
# genai-prices in requirements-dev.txt or editing catalog/lineup.json, then review the diff.
catalog: $(VENV)/.dev
	$(BIN)/python scripts/build_catalog.py

bench: $(VENV)/.dev
	$(BIN)/python bench/run_all.py

# Threadgate next to LiteLLM's proxy (installs LiteLLM into bench/.peers/ once); needs a quiet machine.
bench-peer: $(VENV)/.dev
	$(BIN)/python bench/peer_bench.py

# AWS bundle (docs/deploy.md). The deps layer is built from manylinux wheels for the Lambda
# architecture with pip, no Docker; the CDK CLI is pinned in package.json.
layers: $(VENV)/.dev
	$(BIN)/python scripts/build_layers.py

# npm ci installs exactly package-lock.json and checks every tarball against its sha512 integrity.
node_modules/.bin/cdk: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The console's chart library, copied from the verified npm install into the package (committed,
# so `make dev` needs no Node): after changing its version in package.json, run `make vendor`.
vendor: node_modules/.bin/cdk
	$(BIN)/python scripts/vendor_assets.py

# Browser tests (tests/browser) drive Debian's chromium; installed here when running as root (CI),
# otherwise those tests skip and say why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: browser tests will skip"; \
	  else echo "chromium is not installed (apt-get install chromium): browser tests will skip"; fi; }

synth: layers node_modules/.bin/cdk
	node_modules/.bin/cdk synth --quiet

deploy: layers node_modules/.bin/cdk
	node_modules/.bin/cdk deploy $(CDK_ARGS)

clean:
	rm -rf $(VENV) cdk.out layers/deps/python
