#!/usr/bin/env bash
# Measures the guard trigger's cost per application write: pgbench, one
# client, single-row UPDATEs of the path column (each its own transaction),
# with the trigger disabled and enabled, in the same run on the same table.
#   scripts/guard-cost.sh [postgres-url-without-database] [seconds]
# Needs pgbench and a built dist/ (npx tsc -p tsconfig.json). Creates and
# drops its own database, guard_cost_<pid>.
set -euo pipefail
BASE=${1:-postgres://postgres@127.0.0.1:5432}
SECONDS_EACH=${2:-10}
DB=guard_cost_$$
URL="$BASE/$DB"
HERE=$(cd "$(dirname "$0")/.." && pwd)
psql "$BASE/postgres" -qc "create database $DB"
trap 'psql "$BASE/postgres" -qc "drop database if exists $DB with (force)"' EXIT
psql "$URL" -q <<SQL
create table avatars (id serial primary key, path varchar);
insert into avatars (path) select 'image/avatar-' || g || '.png' from generate_series(1, 100000) g;
vacuum analyze avatars;
SQL
DATABASE_URL=$URL SOURCE_BUCKET=legacy-s3 TARGET_BUCKET=production-s3 node "$HERE/dist/src/cli.js" plan >/dev/null
W=$(mktemp -d)
# A path naming no key: the trigger's fast path (two prefix tests).
echo '\set r random(1, 100000)
update avatars set path = '"'"'uploads/other-'"'"' || :r where id = :r;' > "$W/other.sql"
# A path naming a planned (pending) key: one ledger lookup plus one insert into late_references.
echo '\set r random(1, 100000)
\set k random(1, 100000)
update avatars set path = '"'"'image/avatar-'"'"' || :k || '"'"'.png'"'"' where id = :r;' > "$W/key.sql"
run() { PGOPTIONS="${PGOPTIONS:-}" pgbench -n -c 1 -T "$SECONDS_EACH" -M prepared -f "$W/$1.sql" "$URL" 2>/dev/null | awk -v label="$2" '/latency average/ {lat=$4} /^tps/ {tps=$3} END {printf "%-48s latency %s ms  tps %s\n", label, lat, tps}'; }
psql "$URL" -qc 'alter table avatars disable trigger bucket_migrate_guard'
run other "no trigger, path naming no key"
run key "no trigger, path naming a planned key"
psql "$URL" -qc 'alter table avatars enable trigger bucket_migrate_guard'
run other "trigger, path naming no key"
run key "trigger, path naming a planned key"
rm -rf "$W"
