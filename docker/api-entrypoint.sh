#!/bin/sh
# Start the API: bring the database schema to the newest revision (idempotent, and
# serialised between concurrent starts), then serve on port 8000. Settings come from
# MICROFORGE_* variables; extra arguments go to uvicorn. Behind a proxy, set uvicorn's
# FORWARDED_ALLOW_IPS to the proxy's address.
set -eu

python - <<'PY'
from microforge.settings import get_settings
from microforge.storage.db import upgrade_database

upgrade_database(get_settings().resolved_database_url)
PY

# --limit-concurrency bounds open connections (past it uvicorn answers a plain 503); the
# app's admission limit (MICROFORGE_MAX_CONCURRENT_REQUESTS) answers problem+json below it.
exec uvicorn microforge.api.app:create_app --factory --host 0.0.0.0 --port 8000 \
    --proxy-headers --limit-concurrency "${MICROFORGE_MAX_CONNECTIONS:-1000}" --backlog 2048 \
    "$@"
