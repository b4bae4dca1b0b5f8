#!/usr/bin/env bash
# Benchmark of the CKAN harvester (see bench/README.rst):
#   bench/bench.sh [--n N] [--fetch-consumers K] [--incremental] [--keep-remote]
# Makes sure the services, the dev Solr and the benchmark databases are there,
# then runs bench/run.py with the virtualenv's Python. Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || { echo "no .venv: run 'make venv' first" >&2; exit 1; }
bash dev/services.sh >/dev/null
bash dev/solr.sh start >/dev/null

for db in ckan_bench ckan_bench_remote; do
  if [ "$(su postgres -c "psql -Atqc \"select 1 from pg_database where datname='$db'\"")" != "1" ]; then
    echo "[bench] creating database $db"
    su postgres -c "psql -v ON_ERROR_STOP=1 -qc \"create database $db owner ckan_default encoding 'utf-8' template template0\""
  fi
done

exec .venv/bin/python bench/run.py "$@"
