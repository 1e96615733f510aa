#!/usr/bin/env bash
# bench/batch_path.sh — bulk revocation end to end: BENCH_BATCH_TOTAL
# (default 1,000,000) revocations through `POST /v1/revocations:batch`,
# against the single-item `POST /v1/revocations` in the same run and the
# same process, so the two compare as a ratio.
#
#   bash bench/batch_path.sh [REVOKD_BINARY]   # default: target/release/revokd
#
# A fresh database and key prefix, `revokd serve` (every role, defaults).
# 1. Single path: `wrk -t2 -c16 -d10s` posting `{"jti","sub","exp"}`, every
#    request a new jti (as bench/write_path.sh), then the wait until every
#    accepted revocation is in Postgres and Redis; rate = rows / (load +
#    drain).
# 2. Batch path: the same items as NDJSON files of 10,000 lines, posted by
#    BENCH_BATCH_PARALLEL (default 4) curls at a time (or, with
#    BENCH_BATCH_RATE=N items/s, one request every 10,000/N s, paced, so
#    that the load is N/s rather than as fast as the API takes it); time
#    from the first
#    post until every row is in Postgres, none pending, no chunk waiting for
#    its worker, and the queue empty; then the Redis per-minute counts are checked to hold
#    every entry. Needs Redis and Postgres like the tests, wrk, curl, psql,
#    redis-cli. Cleans up what it made (its process, keys, database).
# 3. Propagation under that load (when target/release/examples/
#    bench_propagation is built, `--features bench`): POST one revocation →
#    first 401 on `GET /v1/auth` of the same process, BENCH_PROPAGATION_N
#    (default 300) sequential probes once idle (before step 2) and once
#    while step 2's batches are being posted and applied; each time again
#    with the checks sent to a second API process (`--roles api`, replica
#    mode) that did not accept the revocation (`_other`): the accepting
#    process refuses a token as soon as it has recorded it, the others once
#    the queue, a worker, Redis and their replica have carried it. With
#    BENCH_PROPAGATION_STAGES=1 the process logs each revocation's stages
#    and bench/propagation_stages.py says where the loaded probes' time went.

set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(REVOKD_|JWT_)' || true)
unset DATABASE_URL
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PG_SERVER=${BENCH_PG_SERVER:-postgres://postgres@127.0.0.1:5432}
TOTAL=${BENCH_BATCH_TOTAL:-1000000}
PARALLEL=${BENCH_BATCH_PARALLEL:-4}
RATE=${BENCH_BATCH_RATE:-}
PER_REQUEST=10000
BIN=${1:-$ROOT/target/release/revokd}
PROBE=$ROOT/target/release/examples/bench_propagation
PROBES=${BENCH_PROPAGATION_N:-300}
SECRET="bench-secret-that-is-long-enough-for-hs256"
OUT=$(mktemp -d)
STAGES=${BENCH_PROPAGATION_STAGES:-0}
# BENCH_WORKER_CONCURRENCY: the process's REVOKD_WORKER_CONCURRENCY (else its default).
export RUST_LOG=warn
[[ $STAGES == 1 ]] && RUST_LOG="warn,revokd::propagation=debug"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
id=$(tr -d - </proc/sys/kernel/random/uuid)
prefix="revokd-bench-${id}:" db="revokd_bench_${id}" pid= other_pid=
cleanup() {
  [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true
  [[ -n $other_pid ]] && kill -KILL "$other_pid" 2>/dev/null || true
  redis-cli -u "$REDIS_URL" --scan --pattern "${prefix}*" |
    xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null
  redis-cli -u "$REDIS_URL" zrem core:apalis:queues:list "${prefix}queue:jobs:workers" >/dev/null
  psql "$PG_SERVER/postgres" -X -q -c "drop database if exists \"$db\" with (force)" || true
  # BENCH_KEEP=DIR: keep the processes' logs and the probes' samples there.
  [[ -n ${BENCH_KEEP:-} ]] && { mkdir -p "$BENCH_KEEP"; cp "$OUT"/*.log "$OUT"/*.tsv "$BENCH_KEEP"/ 2>/dev/null || true; }
  rm -rf "$OUT"
}
trap cleanup EXIT

sql() { psql "$PG_SERVER/$db" -X -At -c "$1" 2>/dev/null || echo -1; }
# Waits until `like` rows number `want`, none pending for Redis, queue empty.
drain() {
  local like=$1 want=$2 rows pending queued
  for _ in $(seq 1200); do
    rows=$(sql "select count(*) from revoked_tokens where token_id like '$like'")
    # Pending rows, and chunks whose job has not written them yet (before
    # queued_chunks, a build older than 2026-12-04: rows in_redis null).
    if [[ $(sql "select to_regclass('queued_chunks') is not null") == t ]]; then
      pending=$(sql "select (select count(*) from revoked_tokens where in_redis is false)
                            + (select count(*) from queued_chunks)")
    else
      pending=$(sql "select count(*) from revoked_tokens where in_redis is not true")
    fi
    queued=$(redis-cli -u "$REDIS_URL" llen "${prefix}queue:jobs:active")
    [[ $rows -ge $want && $pending == 0 && $queued == 0 ]] && return 0
    sleep 0.25
  done
  log "not drained: $rows/$want rows, $pending pending, $queued queued"
  return 1
}

# A port that nothing listens on, nor on the next one (the second process's):
# a busy one (RabbitMQ's 25672, say) hung the health check forever.
taken() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
while :; do
  port=$((20000 + RANDOM % 10000))
  taken "$port" || taken "$((port + 1))" || break
done
if [[ -n ${BENCH_WORKER_CONCURRENCY:-} ]]; then export REVOKD_WORKER_CONCURRENCY=$BENCH_WORKER_CONCURRENCY; fi
DATABASE_URL="$PG_SERVER/$db" REVOKD_KEY_PREFIX="$prefix" REVOKD_API_KEYS=bench:bench-key \
  JWT_SECRET="$SECRET" REVOKD_LISTEN="127.0.0.1:$port" \
  REVOKD_SPOOL_DIR="$OUT/spool" "$BIN" serve 2>"$OUT/revokd.log" &
pid=$!
disown "$pid"
for _ in $(seq 100); do curl -sf --max-time 1 "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
# A second API process (replica mode), which accepts nothing: the probes'
# checks go to it too, to measure a revocation reaching a process that did
# not accept it (through the queue, a worker, Redis and its replica).
other=$((port + 1))
DATABASE_URL="$PG_SERVER/$db" REVOKD_KEY_PREFIX="$prefix" REVOKD_API_KEYS=bench:bench-key \
  JWT_SECRET="$SECRET" REVOKD_LISTEN="127.0.0.1:$other" REVOKD_ROLES=api \
  REVOKD_SPOOL_DIR="$OUT/spool" "$BIN" serve 2>"$OUT/other.log" &
other_pid=$!
disown "$other_pid"
for _ in $(seq 100); do curl -sf --max-time 1 "127.0.0.1:$other/readyz" >/dev/null && break; sleep 0.1; done

cat >"$OUT/post.lua" <<'LUA'
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local n = 0
function request()
  n = n + 1
  local body = string.format('{"jti":"s%d-%d","sub":"bench","exp":%d}', id, n, os.time() + 3600)
  return wrk.format("POST", "/v1/revocations", {
    ["Authorization"] = "Bearer bench-key",
    ["Content-Type"] = "application/json",
  }, body)
end
LUA

log "single path: wrk 10 s"
started=$(date +%s.%N)
wrk -t2 -c16 -d10s -s "$OUT/post.lua" "http://127.0.0.1:$port" >"$OUT/single.wrk"
single_rows=$(sql "select count(*) from revoked_tokens where token_id like 's%'")
drain 's%' "$single_rows"
single_secs=$(echo "$(date +%s.%N) - $started" | bc)
single_rate=$(echo "$single_rows / $single_secs" | bc)

probe() { # label [check port]
  BENCH_URL="http://127.0.0.1:$port" BENCH_CHECK_URL="http://127.0.0.1:${2:-$port}" \
    BENCH_API_KEY=bench-key JWT_SECRET="$SECRET" \
    BENCH_N="$PROBES" BENCH_LABEL="$1" BENCH_SAMPLES="$OUT/probe_$1.tsv" "$PROBE" 2>>"$OUT/probe.log"
}
if [[ -x $PROBE ]]; then
  log "propagation idle: $PROBES probes, then as many checked on the other process"
  probe idle >"$OUT/probe_idle.txt"
  probe idle_other "$other" >"$OUT/probe_idle_other.txt"
fi

log "batch path: writing $TOTAL items in files of $PER_REQUEST"
exp=$(($(date +%s) + 3600))
awk -v total="$TOTAL" -v per="$PER_REQUEST" -v until="$exp" -v dir="$OUT" 'BEGIN {
  for (i = 0; i < total; i++) {
    file = sprintf("%s/batch-%05d.ndjson", dir, int(i / per))
    printf "{\"jti\":\"b%07d\",\"sub\":\"user-%d\",\"exp\":%d}\n", i, i % 10000, until > file
    if ((i + 1) % per == 0) close(file)
  }
}'
log "batch path: posting ($PARALLEL at a time)"
started=$(date +%s.%N)
probe_pid=
if [[ -x $PROBE ]]; then
  (sleep 1; probe batch_load >"$OUT/probe_load.txt"; probe batch_load_other "$other" >"$OUT/probe_load_other.txt") &
  probe_pid=$!
fi
post_one() { # file
  curl -s -o /dev/null -w '%{http_code}\n' -H 'Authorization: Bearer bench-key' \
    -H 'Content-Type: application/x-ndjson' --data-binary @"$1" \
    "http://127.0.0.1:$port/v1/revocations:batch"
}
if [[ -n $RATE ]]; then
  interval=$(echo "scale=3; $PER_REQUEST / $RATE" | bc)
  for file in "$OUT"/batch-*.ndjson; do
    post_one "$file" >>"$OUT/codes" &
    sleep "$interval"
  done
  wait $(jobs -p | grep -vx "${probe_pid:-none}") 2>/dev/null || true
else
  export -f post_one
  export port
  ls "$OUT"/batch-*.ndjson | xargs -P "$PARALLEL" -I{} bash -c 'post_one {}' >"$OUT/codes"
fi
posted=$(echo "$(date +%s.%N) - $started" | bc)
drain 'b%' "$TOTAL"
batch_secs=$(echo "$(date +%s.%N) - $started" | bc)
batch_rate=$(echo "$TOTAL / $batch_secs" | bc)
[[ -n $probe_pid ]] && { wait "$probe_pid" || log "propagation under load failed: $(tail -3 "$OUT/probe.log")"; }
# The deny-list's own counts (kept by the write scripts): every entry there.
in_redis=$(redis-cli -u "$REDIS_URL" hvals "${prefix}count:jti" | awk '{ s += $1 } END { print s + 0 }')
non202=$(grep -vc '^202$' "$OUT/codes" || true)
jobs=$(redis-cli -u "$REDIS_URL" hlen "${prefix}queue:jobs:data")

how="$PARALLEL at a time"
[[ -n $RATE ]] && how="paced at $RATE/s"
printf '| path | revocations | answered after | in Postgres and Redis after | per second | non-2xx |\n|---|---|---|---|---|---|\n'
printf '| POST /v1/revocations (wrk -c16) | %s | 10 s | %.1f s | %s | %s |\n' \
  "$single_rows" "$single_secs" "$single_rate" "$(awk '/Non-2xx/ { print $NF }' "$OUT/single.wrk" | grep . || echo 0)"
printf '| POST /v1/revocations:batch (%s × %s, %s) | %s | %.1f s | %.1f s | %s | %s |\n' \
  "$((TOTAL / PER_REQUEST))" "$PER_REQUEST" "$how" "$TOTAL" "$posted" "$batch_secs" "$batch_rate" "$non202"
printf '\nbatch / single: %s×; deny-list entries counted in Redis: %s (of %s); jobs in the queue hash: %s\n' \
  "$(echo "scale=1; $batch_rate / $single_rate" | bc)" "$in_redis" "$((TOTAL + single_rows))" "$jobs"
overflows=$(grep -c "exceed the overlay's limit" "$OUT/revokd.log" || true)
printf 'pending overlay over its limit (checks sent to Postgres): %s times\n' "$overflows"
# Where each process's checks were answered (the probes' GETs, mostly).
sources() { # port
  curl -s --max-time 5 "127.0.0.1:$1/metrics" |
    awk -F'[{}]' '/^revokd_checks_total\{/ { split($2, l, ","); for (i in l) if (l[i] ~ /^source=/) { gsub(/source=|"/, "", l[i]); n[l[i]] += $3 } }
      END { for (s in n) if (n[s] > 0) printf "%s %d, ", s, n[s] }'
}
printf 'checks by source: accepting process: %s other process: %s\n' "$(sources "$port")" "$(sources "$other")"
if [[ -x $PROBE ]]; then
  printf '\n'
  cat "$OUT/probe_idle.txt" "$OUT/probe_idle_other.txt" "$OUT/probe_load.txt" \
    "$OUT/probe_load_other.txt" 2>/dev/null || true
  if [[ $STAGES == 1 ]]; then
    python3 "$ROOT/bench/propagation_stages.py" "$OUT/probe_batch_load.tsv" "$OUT/revokd.log" "$OUT/revokd.log"
    # The other process's follower stamps its own "replica applied": its log first.
    printf '\nchecked on the other process:\n'
    python3 "$ROOT/bench/propagation_stages.py" "$OUT/probe_batch_load_other.tsv" "$OUT/other.log" "$OUT/revokd.log"
  fi
else
  printf '\n(no propagation figures: build target/release/examples/bench_propagation with --features bench)\n'
fi
