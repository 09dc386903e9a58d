#!/bin/sh
# Spilo's restore_command for standby clusters, which the operator's
# standby patch names:
#   envdir "/run/etc/wal-e.d/env-standby" /scripts/restore_command.sh "%f" "%p"
# `spilo configure` writes env-standby: PGBACKREST_CONFIG and
# PGBACKREST_STANZA, the source's repository, read by pgBackRest itself.
# A streaming standby has no stanza there: nothing to fetch, and
# PostgreSQL goes on streaming (a failure here is its normal answer).
[ -n "$1" ] && [ -n "$2" ] || exit 1
[ -n "${PGBACKREST_STANZA:-}" ] || exit 1
exec pgbackrest archive-get "$1" "$2"
