#!/bin/bash
# What one soak writes to Postgres: the WAL from when its traffic starts to just before it ends,
# then the bench database's row counts and sizes of the event and bandit tables. For comparing
# two builds side by side: run it for each, alternating (docs/benchmarks.md).
#
#   bench/compare-wal.sh LABEL DIR SECONDS
#
# DIR holds the `oo` and `oo-bench` of one build (built together: oo-bench migrates the bench
# database with its own migrations). Writes /tmp/compare-wal-LABEL.log (the soak's output) and
# /tmp/compare-wal-LABEL.stats (the figures). Nothing else should run meanwhile.
set -euo pipefail
label=$1 dir=$2 secs=$3
log=/tmp/compare-wal-$label.log stats=/tmp/compare-wal-$label.stats
q() { psql -h 127.0.0.1 -U postgres -d "$1" -Atqc "$2"; }
rm -f "$log" "$stats"
"$dir/oo-bench" soak --rate 500 --seconds "$secs" --interval 30 --warmup 30 --users 1000 >"$log" 2>&1 &
soak=$!
until grep -q "t (s)" "$log" 2>/dev/null; do sleep 0.5; done
before=$(q postgres "SELECT pg_current_wal_lsn()")
sleep $((secs - 5))
db=$(q postgres "SELECT datname FROM pg_database WHERE datname LIKE 'oo_bench_%' ORDER BY oid DESC LIMIT 1")
after=$(q postgres "SELECT pg_current_wal_lsn()")
{
  echo "== $label ($db)"
  q postgres "SELECT 'WAL ' || pg_size_pretty(pg_wal_lsn_diff('$after', '$before'))"
  q "$db" "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del, pg_size_pretty(pg_total_relation_size(relid))
           FROM pg_stat_user_tables WHERE relname = 'events' OR relname LIKE 'bandit_%' ORDER BY relname"
  q "$db" "SELECT 'rewards ' || (SELECT count(*) FROM events WHERE event_type = 'TipRewarded')
           || ', database ' || pg_size_pretty(pg_database_size(current_database()))"
} >"$stats"
wait "$soak"
cat "$stats"
