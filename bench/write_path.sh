#!/usr/bin/env bash
# bench/write_path.sh — the write path's cost: `POST /v1/revocations`
# throughput and latency of one or more revokd binaries, one after the other
# in the same run, so they compare as ratios.
#
#   bash bench/write_path.sh [REVOKD_BINARY...]   # default: target/release/revokd
#
# For each binary: a fresh database and key prefix, `revokd serve` (every
# role, defaults), then `wrk -t2 -c16 -d10s --latency` posting revocations
# by `{"jti","sub","exp"}`, every request a new jti (after a 3 s warm-up),
# then the time until the worker has written every accepted revocation to
# Postgres and Redis. Needs Redis and Postgres like the tests, wrk, psql and
# redis-cli. Cleans up what it made (its processes, keys, databases).

set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(REVOKD_|JWT_)' || true)
unset DATABASE_URL
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PG_SERVER=${BENCH_PG_SERVER:-postgres://postgres@127.0.0.1:5432}
DURATION=${BENCH_WRK_DURATION:-10s}
CONNECTIONS=${BENCH_WRK_CONNECTIONS:-16}
BINARIES=("$@")
((${#BINARIES[@]})) || BINARIES=("$ROOT/target/release/revokd")
OUT=$(mktemp -d)
export RUST_LOG=warn

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
PIDS=() PREFIXES=() DBS=()
cleanup() {
  local pid prefix db
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for prefix in "${PREFIXES[@]+"${PREFIXES[@]}"}"; do
    redis-cli -u "$REDIS_URL" --scan --pattern "${prefix}*" |
      xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null
    redis-cli -u "$REDIS_URL" zrem core:apalis:queues:list "${prefix}queue:jobs:workers" >/dev/null
  done
  for db in "${DBS[@]+"${DBS[@]}"}"; do
    psql "$PG_SERVER/postgres" -X -q -c "drop database if exists \"$db\" with (force)" || true
  done
  rm -rf "$OUT"
}
trap cleanup EXIT

cat >"$OUT/post.lua" <<'LUA'
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local n = 0
function request()
  n = n + 1
  local body = string.format('{"jti":"w%d-%d","sub":"bench","exp":%d}', id, n, os.time() + 600)
  return wrk.format("POST", "/v1/revocations", {
    ["Authorization"] = "Bearer bench-key",
    ["Content-Type"] = "application/json",
  }, body)
end
LUA

printf '| binary | req/s | p50 | p99 | non-2xx | drained after |\n|---|---|---|---|---|---|\n' >"$OUT/table"
for bin in "${BINARIES[@]}"; do
  id=$(tr -d - </proc/sys/kernel/random/uuid)
  prefix="revokd-bench-${id}:" db="revokd_bench_${id}"
  PREFIXES+=("$prefix") DBS+=("$db")
  # A port nothing listens on (a busy one hung the health check forever).
  port=$((20000 + RANDOM % 10000))
  while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((20000 + RANDOM % 10000)); done
  DATABASE_URL="$PG_SERVER/$db" REVOKD_KEY_PREFIX="$prefix" REVOKD_API_KEYS=bench:bench-key \
    JWT_SECRET="bench-secret-that-is-long-enough-for-hs256" REVOKD_LISTEN="127.0.0.1:$port" \
    REVOKD_SPOOL_DIR="$OUT/spool-$id" "$bin" serve 2>"$OUT/$id.log" &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf --max-time 1 "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  log "$bin: warm-up"
  wrk -t2 -c"$CONNECTIONS" -d3s -s "$OUT/post.lua" "http://127.0.0.1:$port" >/dev/null
  log "$bin: measured run ($DURATION)"
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$OUT/post.lua" "http://127.0.0.1:$port" >"$OUT/$id.wrk"
  started=$(date +%s.%N)
  # Drained: nothing left queued, and every row written to Redis.
  for _ in $(seq 600); do
    pending=$(psql "$PG_SERVER/$db" -X -At -c "select count(*) from revoked_tokens where in_redis is false" 2>/dev/null || echo 0)
    queued=$(redis-cli -u "$REDIS_URL" llen "${prefix}queue:jobs:active")
    [[ $pending == 0 && $queued == 0 ]] && break
    sleep 0.1
  done
  drained=$(echo "$(date +%s.%N) - $started" | bc)
  rps=$(awk '/Requests\/sec/ { print $2 }' "$OUT/$id.wrk")
  p50=$(awk '$1 == "50%" { print $2 }' "$OUT/$id.wrk")
  p99=$(awk '$1 == "99%" { print $2 }' "$OUT/$id.wrk")
  bad=$(awk '/Non-2xx/ { print $NF }' "$OUT/$id.wrk")
  printf '| %s | %s | %s | %s | %s | %.1f s |\n' "$bin" "$rps" "$p50" "$p99" "${bad:-0}" "$drained" >>"$OUT/table"
  kill -TERM "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
done
cat "$OUT/table"
