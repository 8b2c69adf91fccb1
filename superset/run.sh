#!/usr/bin/env bash
# Starts Superset's web server (after superset/setup.sh) on ${SUPERSET_HOST:-127.0.0.1}:${SUPERSET_PORT:-8088}.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${SUPERSET_VENV:-/var/cache/skystream/superset-venv}"
export SUPERSET_METADATA_URI="${SUPERSET_METADATA_URI:-postgresql://postgres@127.0.0.1:5432/superset}"
export SUPERSET_CONFIG_PATH="$here/superset_config.py"
export FLASK_APP=superset
exec "${SUPERSET_BIN:-$venv/bin/superset}" run -h "${SUPERSET_HOST:-127.0.0.1}" -p "${SUPERSET_PORT:-8088}" --with-threads
