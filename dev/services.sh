#!/usr/bin/env bash
# Install (if missing) and start the real services the test suite and the demo
# need: PostgreSQL, Redis and RabbitMQ, all bound to 127.0.0.1, without systemd.
# Also installs Chromium and chromedriver for the browser tests.
# Idempotent: running it again only starts what is not running.
set -euo pipefail

log() { printf '[services] %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

need_pkgs=()
command -v pg_ctlcluster >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need_pkgs+=(rabbitmq-server)
dpkg -s libpq-dev >/dev/null 2>&1 || need_pkgs+=(libpq-dev)
dpkg -s build-essential >/dev/null 2>&1 || need_pkgs+=(build-essential)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
# Headless browser of the browser tests (tests/browser): Debian's Chromium and
# its driver (Selenium never downloads one).
dpkg -s chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
dpkg -s chromium-driver >/dev/null 2>&1 || need_pkgs+=(chromium-driver)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# --- PostgreSQL -------------------------------------------------------------
pg_version=$(ls /etc/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
  log "starting PostgreSQL $pg_version"
  $SUDO pg_ctlcluster "$pg_version" main start
fi
for _ in $(seq 1 30); do
  su postgres -c "psql -Atqc 'select 1'" >/dev/null 2>&1 && break
  sleep 1
done

psql_admin() { su postgres -c "psql -v ON_ERROR_STOP=1 -Atq $*"; }
ensure_role() {
  if [ "$(psql_admin "-c \"select 1 from pg_roles where rolname='$1'\"")" != "1" ]; then
    log "creating role $1"
    psql_admin "-c \"create role $1 login password 'pass'\""
  fi
}
ensure_db() {
  if [ "$(psql_admin "-c \"select 1 from pg_database where datname='$1'\"")" != "1" ]; then
    log "creating database $1"
    psql_admin "-c \"create database $1 owner $2 encoding 'utf-8' template template0\""
  fi
}
ensure_role ckan_default
ensure_role datastore_default
ensure_db ckan_test ckan_default
ensure_db datastore_test ckan_default
ensure_db ckan_demo ckan_default
ensure_db ckan_demo_remote ckan_default
ensure_db ckan_test_remote ckan_default       # the remote CKAN of the two-CKAN tests
ensure_db ckan_test_remote_2_11 ckan_default  # the same on CKAN 2.11
# dev/services.sh --database NAME: also create that database (e.g. the test
# database of another CKAN version).
if [ "${1:-}" = "--database" ] && [ -n "${2:-}" ]; then
  ensure_db "$2" ckan_default
fi

# --- Redis ------------------------------------------------------------------
if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  log "starting Redis"
  mkdir -p /var/run/redis /var/log/redis /var/lib/redis
  chown redis:redis /var/run/redis /var/log/redis /var/lib/redis 2>/dev/null || true
  su redis -s /bin/sh -c "redis-server /etc/redis/redis.conf --bind 127.0.0.1 --daemonize yes --supervised no"
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

# --- RabbitMQ ---------------------------------------------------------------
rabbit_up() {
  timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672' >/dev/null 2>&1
}
if ! rabbit_up; then
  log "starting RabbitMQ (takes 10-30 s)"
  conf=/etc/rabbitmq/rabbitmq-env.conf
  grep -q '^NODE_IP_ADDRESS=127.0.0.1' "$conf" 2>/dev/null || echo 'NODE_IP_ADDRESS=127.0.0.1' >> "$conf"
  grep -q '^ERL_EPMD_ADDRESS=127.0.0.1' "$conf" 2>/dev/null || echo 'ERL_EPMD_ADDRESS=127.0.0.1' >> "$conf"
  mkdir -p /var/lib/rabbitmq /var/log/rabbitmq
  chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
  su rabbitmq -s /bin/sh -c "HOME=/var/lib/rabbitmq ERL_EPMD_ADDRESS=127.0.0.1 rabbitmq-server -detached" >/dev/null 2>&1 || true
  for _ in $(seq 1 90); do rabbit_up && break; sleep 1; done
  rabbit_up || { log "RabbitMQ did not come up; see /var/log/rabbitmq"; exit 1; }
fi
log "PostgreSQL, Redis and RabbitMQ are up on 127.0.0.1"
