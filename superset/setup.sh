#!/usr/bin/env bash
# Installs Apache Superset (pinned), initialises it, imports the skystream bundle (database
# connection, datasets, charts, the "Bluesky trends" dashboard) and points the connection at
# skystream's SQL endpoint. Idempotent: run it again to update the bundle.
#
#   superset/setup.sh [SKYSTREAM_SQL_URI]
#     SKYSTREAM_SQL_URI        default postgresql://skystream:${SKYSTREAM_SQL_PASSWORD}@127.0.0.1:5433/skystream
#   Environment:
#     SUPERSET_VENV            where Superset is installed (default /var/cache/skystream/superset-venv)
#     SUPERSET_BIN             an installed `superset` to use instead (the apache/superset image)
#     SUPERSET_METADATA_URI    Superset's own database, PostgreSQL (default
#                              postgresql://postgres@127.0.0.1:5432/superset; created if missing)
#     SUPERSET_ADMIN_PASSWORD  the `admin` user's password (default admin)
#     SUPERSET_SECRET_KEY      see superset_config.py
#   Then: superset/run.sh starts the web server on 127.0.0.1:8088.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${SUPERSET_VENV:-/var/cache/skystream/superset-venv}"
sql_uri="${1:-${SKYSTREAM_SQL_URI:-postgresql://skystream:${SKYSTREAM_SQL_PASSWORD:-}@127.0.0.1:5433/skystream}}"
export SUPERSET_METADATA_URI="${SUPERSET_METADATA_URI:-postgresql://postgres@127.0.0.1:5432/superset}"
export SUPERSET_CONFIG_PATH="$here/superset_config.py"
export FLASK_APP=superset
admin_password="${SUPERSET_ADMIN_PASSWORD:-admin}"

log() { echo "superset/setup.sh: $*" >&2; }

# 1. Install (pinned; 6.1.0 imports rich and cachetools without declaring them, and
#    flask-caching 2.5 breaks its start).
if [ -z "${SUPERSET_BIN:-}" ] && [ ! -x "$venv/bin/superset" ]; then
    log "installing apache-superset 6.1.0 into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "apache-superset[postgres]==6.1.0" "flask-caching==2.4.1" rich cachetools
fi
superset="${SUPERSET_BIN:-$venv/bin/superset}"

# 2. Its metadata database (created when psql is at hand; in compose, PostgreSQL's image makes it).
db_name="${SUPERSET_METADATA_URI##*/}"
db_name="${db_name%%\?*}"
server_uri="${SUPERSET_METADATA_URI%/*}/postgres"
if command -v psql >/dev/null 2>&1 && ! psql "$server_uri" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db_name'" | grep -q 1; then
    log "creating database $db_name"
    psql "$server_uri" -qc "CREATE DATABASE \"$db_name\""
fi

# 3. Schema, admin user, roles and permissions.
log "superset db upgrade"
"$superset" db upgrade >/dev/null 2>&1 || "$superset" db upgrade
if ! "$superset" fab list-users 2>/dev/null | grep -q "username:admin"; then
    "$superset" fab create-admin --username admin --firstname Sky --lastname Stream \
        --email admin@localhost --password "$admin_password" >/dev/null
fi
log "superset init"
"$superset" init >/dev/null 2>&1 || "$superset" init

# 4. The bundle (superset/bundle/, zipped under one top folder) with the real connection URI
#    (the checked-in bundle carries no password).
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/skystream_bundle"
cp -r "$here/bundle/." "$tmp/skystream_bundle/"
SQL_URI="$sql_uri" python3 - "$tmp/skystream_bundle/databases/skystream.yaml" <<'PY'
import json, os, sys
p = sys.argv[1]
lines = open(p).read().splitlines()
uri = json.dumps(os.environ["SQL_URI"])  # a JSON string is a YAML string
lines = [f"sqlalchemy_uri: {uri}" if l.startswith("sqlalchemy_uri:") else l for l in lines]
open(p, "w").write("\n".join(lines) + "\n")
PY
(cd "$tmp" && python3 -m zipfile -c bundle.zip skystream_bundle/)
log "importing the dashboard bundle"
"$superset" import-dashboards -p "$tmp/bundle.zip" -u admin
# An import over an existing connection keeps its old password: set the URI explicitly.
"$superset" set-database-uri -d skystream -u "$sql_uri" >/dev/null
log "done: dashboard /superset/dashboard/bluesky-trends/ (admin / $admin_password)"
