"""Superset configuration for exploring skystream's results.

Read by Superset through SUPERSET_CONFIG_PATH (superset/setup.sh and docker-compose.yml set it).
Everything comes from the environment, with defaults for a laptop:

  SUPERSET_SECRET_KEY        signs sessions (required: Superset refuses the default one)
  SUPERSET_METADATA_URI      Superset's own metadata database (PostgreSQL)
"""

import os

SECRET_KEY = os.environ.get("SUPERSET_SECRET_KEY") or "skystream-local-only-change-me-0123456789"

# Superset's own tables (dashboards, charts, users). PostgreSQL: SQLite hits a UNIQUE constraint
# on a second dataset with the same table name in another schema.
SQLALCHEMY_DATABASE_URI = os.environ.get(
    "SUPERSET_METADATA_URI", "postgresql://postgres@127.0.0.1:5432/superset"
)

# skystream's SQL endpoint is read-only and answers quickly; no async workers or result
# backend are needed.
SQLLAB_TIMEOUT = 60
SUPERSET_WEBSERVER_TIMEOUT = 60
ROW_LIMIT = 50000

# Works offline: no telemetry pixel, no example data.
SCARF_ANALYTICS = False

FEATURE_FLAGS = {
    "DASHBOARD_NATIVE_FILTERS": True,
    "DASHBOARD_CROSS_FILTERS": True,
}

# A simple in-process cache (no Redis dependency for Superset itself).
CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 60}
DATA_CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache", "CACHE_DEFAULT_TIMEOUT": 30}

# The dashboard is looked at in a headless browser by the test: let it load without a CSP
# warning storm.
TALISMAN_ENABLED = False
WTF_CSRF_ENABLED = True
