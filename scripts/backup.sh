#!/usr/bin/env bash
# Back up the platform: PostgreSQL (embedded or DATABASE_URL) as one consistent pg_dump snapshot, the Dagster
# database, and the file store, with a manifest of checksums and row counts. See RUNBOOK.md §5.
#   scripts/backup.sh OUT_DIR        (OUT_DIR must be empty or absent)
set -euo pipefail
cd "$(dirname "$0")/.."
EAP="${EAP:-.venv/bin/eap}"
exec "$EAP" db backup "${1:?usage: scripts/backup.sh OUT_DIR}"
