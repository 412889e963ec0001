#!/usr/bin/env bash
# Restore a backup (scripts/backup.sh) into an EMPTY database and file store, then migrate to this release and
# check the row counts against the manifest. See RUNBOOK.md §5.
#   scripts/restore.sh BACKUP_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
EAP="${EAP:-.venv/bin/eap}"
exec "$EAP" db restore "${1:?usage: scripts/restore.sh BACKUP_DIR}"
