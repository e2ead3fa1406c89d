# The user's interface. `make run` and `make test` are all a fresh machine needs.
#   make run     install if needed, generate the default synthetic delivery, materialise every asset
#   make test    install if needed, run the whole test suite
#   make ui      the Dagster UI on http://127.0.0.1:3000 over the same home as `make run`
#   make bench   wall time and peak memory per stage (N=100000 by default; N=1000000 for the big one)
#   make lint    ruff

PYTHON     ?= python3
UV_VERSION ?= 0.13.9
UV         := $(PYTHON) -m uv
VENV       := .venv
BIN        := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

EXTRACTS   ?= var/extracts
HOME_DIR   ?= var/home
PATIENTS   ?= 50000
SEED       ?= 42
DATE       ?= 2026-11-01
N          ?= 100000
PORT       ?= 3000

.PHONY: install run test ui bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

$(EXTRACTS)/$(DATE)/_manifest.json: | install
	$(BIN)/phm generate --patients $(PATIENTS) --seed $(SEED) --extract-date $(DATE) --out $(EXTRACTS)

run: install $(EXTRACTS)/$(DATE)/_manifest.json
	$(BIN)/phm run --extracts $(EXTRACTS) --home $(HOME_DIR)

test: install
	$(BIN)/pytest

# Started from DAGSTER_HOME (so Dagster does not warn about the repository's dagster.yaml in
# the current folder), loading the code from the repository (-d). `dagster dev` is marked
# superseded by `dg dev`, which needs the separate dagster-dg-cli package and a dg project
# layout; `dagster dev` is still the documented way for a plain code location, so its one
# "superseded" notice is filtered (that message only).
ui: install
	@mkdir -p $(HOME_DIR)/dagster && cp dagster.yaml $(HOME_DIR)/dagster/dagster.yaml
	cd $(abspath $(HOME_DIR))/dagster && umask 077 && \
	DAGSTER_HOME=$(abspath $(HOME_DIR))/dagster PHM_HOME=$(abspath $(HOME_DIR)) PHM_EXTRACTS=$(abspath $(EXTRACTS)) \
	PYTHONWARNINGS="ignore:Function \`dev_command\` is superseded" \
		$(abspath $(BIN))/dagster dev -h 127.0.0.1 -p $(PORT) -m pipelines.definitions -d $(CURDIR)

bench: install
	$(BIN)/phm bench --patients $(N) --seed $(SEED)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf var/home var/bench
