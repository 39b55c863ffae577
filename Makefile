# Everything builds from nothing: `make run` and `make test` create the
# virtualenv, install the pinned requirements and generate the stubs first.
# The 13 resource `*_service.proto` files are themselves generated, from
# protos/templates/ and models.py: edit those, then `make service-protos`
# (tests/test_protos.py fails when a checked-in one is stale).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PROTOS := $(wildcard protos/versatil/ml/v1/*.proto)
GENERATED := versatil/ml/v1/.generated

.PHONY: run test lint proto service-protos migrate migrate-status migrate-down migration seed reset backup restore clean bench

run: $(GENERATED)
	$(PY) -m server

test: $(GENERATED) lint
	$(PY) -m pytest -q

# Proto style (buf), and the layers of server/: imports only point down (import-linter,
# the contract in pyproject.toml).
lint: $(INSTALLED)
	$(VENV)/bin/buf lint
	$(VENV)/bin/lint-imports

proto: $(GENERATED)

service-protos: $(INSTALLED)
	$(PY) protos/generate.py

$(INSTALLED): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

# Python messages, gRPC stubs and their .pyi types (mypy-protobuf), into the
# git-ignored package `versatil/`.
# Generated beside the old package and swapped in whole, so a running test
# never imports a half-written package.
$(GENERATED): $(PROTOS) $(INSTALLED)
	rm -rf .generated && mkdir .generated
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I protos \
		-I "$$($(PY) -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')" \
		--python_out=.generated --grpc_python_out=.generated \
		--mypy_out=quiet:.generated --mypy_grpc_out=quiet:.generated $(PROTOS)
	touch .generated/$@
	rm -rf versatil && mv .generated/versatil versatil && rmdir .generated

migrate: $(GENERATED)
	$(PY) -m server.migrate up

migrate-status: $(GENERATED)
	$(PY) -m server.migrate status

migrate-down: $(GENERATED)
	$(PY) -m server.migrate down

migration: $(INSTALLED)
	@test -n "$(name)" || (echo 'usage: make migration name="add karma to users"' && exit 2)
	$(PY) -m server.migrate create "$(name)"

seed: $(GENERATED)
	$(PY) -m server.seed

# Drops every row: always allowed on the embedded database, on DATABASE_URL only with FORCE=1.
reset: $(GENERATED)
	$(PY) -m server.migrate reset $(if $(filter 1 yes true,$(FORCE)),--force)

# pg_dump -Fc into backups/versatil-<UTC time>.dump; restore replaces the database with FILE.
backup: $(INSTALLED)
	$(PY) -m server.backup dump

restore: $(INSTALLED)
	@test -n "$(FILE)" || (echo 'usage: make restore FILE=backups/versatil-20260101T000000Z.dump' && exit 2)
	$(PY) -m server.backup restore "$(FILE)"

clean:
	rm -rf $(VENV) versatil .generated

SIZE ?= 1000000
# Not a test: times the service against the limits of this machine (see bench/).
bench: $(GENERATED)
	$(PY) -m bench --size $(SIZE)
