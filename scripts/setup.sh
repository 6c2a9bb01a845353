#!/usr/bin/env bash
# Installs what stackprobe needs on a Debian machine, idempotently; `make test` and CI run it.
#   scripts/setup.sh           the venv with stackprobe and its test tools, and the Debian
#                              tools the tests use (promtool, dnsmasq)
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
  need dnsmasq dnsmasq-base
fi
if [ "$mode" = "--bench" ]; then
  need nginx nginx-light
  need prometheus-blackbox-exporter prometheus-blackbox-exporter
fi
if [ "${#packages[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "setup: installing Debian packages: ${packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" >/dev/null
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
stamp="$venv/.installed-$( (cat pyproject.toml; find exporter probes -name '*.py' | sort) |
  sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ] || ! ls -d build/__editable__.stackprobe-* >/dev/null 2>&1; then
  "$venv/bin/pip" install -q --disable-pip-version-check -e '.[test]' \
    --config-settings editable_mode=strict
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
