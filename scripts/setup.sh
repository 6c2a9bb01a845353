#!/usr/bin/env bash
# Installs what stackprobe needs on a Debian machine, idempotently; `make test` and CI run it.
#   scripts/setup.sh           the venv with stackprobe and its test tools, the Debian tools
#                              the tests use (promtool, dnsmasq, chromium), and PostgreSQL and Redis,
#                              configured and started (there is no systemd to start them)
#   scripts/setup.sh --venv    only the venv (enough to run stackprobe)
#   scripts/setup.sh --bench   also nginx and prometheus-blackbox-exporter for bench/
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-test}"
venv=.venv

packages=()
need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || packages+=("$2"); }
if [ "$mode" != "--venv" ]; then
  need promtool prometheus
  need amtool prometheus-alertmanager
  # the TSDB that deduplicates an HA pair's samples (tests/e2e/test_cluster_ha.py)
  need victoria-metrics victoria-metrics
  need dnsmasq dnsmasq-base
  need pg_ctlcluster postgresql
  need redis-server redis-server
  need curl curl
  # a real forward proxy for the http kind's proxy_url (tests/probes/test_http_proxy.py)
  need tinyproxy tinyproxy-bin
  # the console's tests look at it as a person does (tests/support/browser.py)
  need chromium chromium
fi
if [ "$mode" = "--bench" ]; then
  need nginx nginx-light
  need prometheus-blackbox-exporter prometheus-blackbox-exporter
  need prometheus-postgres-exporter prometheus-postgres-exporter
  need prometheus-redis-exporter prometheus-redis-exporter
  # instructions per probe run, which machine noise does not move (bench/instructions.py)
  need valgrind valgrind
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if [ "${#packages[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" >/dev/null
fi

if [ "$mode" != "--venv" ]; then
  # PostgreSQL: Debian's cluster, with pg_stat_statements loaded, and the role the tests
  # connect as (a superuser, so they can build the load they assert on).
  pgver=$(ls /etc/postgresql | sort -n | tail -1)
  conf="/etc/postgresql/$pgver/main/conf.d/stackprobe.conf"
  if ! grep -qs pg_stat_statements "$conf"; then
    echo "shared_preload_libraries = 'pg_stat_statements'" | $sudo tee "$conf" >/dev/null
    $sudo pg_ctlcluster "$pgver" main stop 2>/dev/null || true
  fi
  $sudo pg_ctlcluster "$pgver" main status >/dev/null 2>&1 || $sudo pg_ctlcluster "$pgver" main start
  $sudo runuser -u postgres -- psql -qAt -c "SELECT 1 FROM pg_roles WHERE rolname = 'stackprobe_test'" |
    grep -q 1 || $sudo runuser -u postgres -- psql -q -c \
      "CREATE ROLE stackprobe_test LOGIN SUPERUSER PASSWORD 'stackprobe_test'"
  # Redis on its default port, without persistence (the tests start their own as well).
  redis-cli -p 6379 ping >/dev/null 2>&1 ||
    redis-server --daemonize yes --port 6379 --save '' --appendonly no --bind 127.0.0.1 >/dev/null
  # A name on both loopback addresses, for blackbox_exporter's TestDNSProtocol
  # (tests/probes/test_blackbox_prober.py): its own, so nothing else resolves differently.
  dual=stackprobe-dual-stack.localhost
  if grep -qs '^0\{31\}1 ' /proc/net/if_inet6 && ! grep -qs "[[:space:]]$dual\b" /etc/hosts; then
    printf '127.0.0.1 %s\n::1 %s\n' "$dual" "$dual" | $sudo tee -a /etc/hosts >/dev/null
  fi
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: stackprobe needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# The strict editable mode installs a tree of links to the source files that mypy can follow
# (the default import hook cannot be followed); edits show at once, but a new module needs a
# reinstall, so the stamp covers the list of modules as well as pyproject.toml.
stamp="$venv/.installed-$( (cat pyproject.toml; find exporter probes tools demo -name '*.py' | sort) |
  sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ] || ! ls -d build/__editable__.stackprobe-* >/dev/null 2>&1; then
  "$venv/bin/pip" install -q --disable-pip-version-check -e '.[test]' \
    --config-settings editable_mode=strict
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
if [ "$mode" = "--bench" ]; then
  # What the benchmarks measure: stackprobe as the image installs it (a wheel, the base
  # dependencies only). The dev venv's test tools and editable finder add 3 MiB of RSS
  # that no user runs (pytest's and moto's entry points scanned at the first pydantic model,
  # httpx's command line with click and pygments).
  runtime=.venv-runtime
  # made again when the dependencies change, so that none the image would lack stays behind
  deps="$runtime/.deps-$(sha256sum pyproject.toml | cut -c1-16)"
  [ -e "$deps" ] || rm -rf "$runtime"
  [ -x "$runtime/bin/python" ] || { "$python" -m venv "$runtime" && touch "$deps"; }
  stamp="$runtime/.installed-$( (cat pyproject.toml; find exporter probes tools demo -name '*.py' |
    sort | xargs cat) | sha256sum | cut -c1-16)"
  if [ ! -e "$stamp" ]; then
    "$runtime/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps . &&
      "$runtime/bin/pip" install -q --disable-pip-version-check .
    rm -f "$runtime"/.installed-*
    touch "$stamp"
  fi
fi
