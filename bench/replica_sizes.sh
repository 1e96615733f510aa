#!/usr/bin/env bash
# bench/replica_sizes.sh — the replica's curve: one row per deny-list size.
#
#   bash bench/replica_sizes.sh                 # sizes 100000 1000000 10000000
#   BENCH_SIZES="100000 1000000" bash bench/replica_sizes.sh
#
# For each size N it starts an API process (`revokd serve --roles api`,
# read mode replica) against N live revocations in Postgres and reports:
# the time from start to `/readyz` saying the replica is current, the RSS
# the replica added over an empty one (bytes per entry), the peak while
# loading, and `GET /v1/auth` throughput and p99 under wrk, as a ratio to
# the bare axum handler (`examples/bench_bare`) measured in the same run.
#
# Redis is a private redis-server of this run (no persistence), marked as
# holding the whole deny-list without the entries: the replica loads from
# Postgres whatever Redis holds, and rebuilding 10 M keys into Redis first
# would take minutes and measure nothing here. Postgres gets a database of
# this run; both go at the end. Knobs: BENCH_SIZES, BENCH_WRK_DURATION
# (10s), BENCH_SKIP_BUILD=1, BENCH_BIN_DIR.

set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(REVOKD_|JWT_)' || true)
unset DATABASE_URL

SIZES=${BENCH_SIZES:-100000 1000000 10000000}
PG_SERVER=${BENCH_PG_SERVER:-postgres://postgres@127.0.0.1:5432}
WRK_DURATION=${BENCH_WRK_DURATION:-10s}
ID=$(tr -d - </proc/sys/kernel/random/uuid)
PREFIX="revokd-sizes-${ID}:"
DB="revokd_sizes_${ID}"
DB_URL="$PG_SERVER/$DB"
SECRET="bench-secret-${ID}"
OUT="$ROOT/target/bench/sizes-$(date -u +%Y%m%dT%H%M%SZ)"
BIN_DIR=${BENCH_BIN_DIR:-$ROOT/target/release}
mkdir -p "$OUT"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
pg() { psql "$1" -X -q -v ON_ERROR_STOP=1 -At "${@:2}"; }
for tool in cargo wrk curl redis-server redis-cli psql; do
  command -v "$tool" >/dev/null || die "missing: $tool"
done

free_port() {
  local port
  while :; do
    port=$((10000 + RANDOM % 20000))
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

PIDS=()
cleanup() {
  local status=$? pid
  trap - EXIT INT TERM
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do wait "$pid" 2>/dev/null || true; done
  pg "$PG_SERVER/postgres" -c "drop database if exists \"$DB\" with (force)" || log "dropping $DB failed"
  log "raw outputs in ${OUT#"$ROOT"/}"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "build: cargo build --release --features bench --bin revokd --example bench_bare"
  cargo build --release --features bench --bin revokd --example bench_bare
fi
REVOKD="$BIN_DIR/revokd"
[[ -x $REVOKD && -x $BIN_DIR/examples/bench_bare ]] || die "build first (--features bench)"

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
ENV=(DATABASE_URL="$DB_URL" REDIS_URL="$REDIS_URL" REVOKD_KEY_PREFIX="$PREFIX" JWT_SECRET="$SECRET" RUST_LOG=warn)
env "${ENV[@]}" "$REVOKD" migrate >/dev/null
RUN_ID=$(redis-cli -p "$REDIS_PORT" info server | awk -F: '/^run_id:/ { print $2 }' | tr -d '\r')
redis-cli -p "$REDIS_PORT" set "${PREFIX}marker" "$RUN_ID" >/dev/null
TOKEN=$(env "${ENV[@]}" "$REVOKD" mint --sub bench --ttl 2h)

vm_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# wrk_auth PORT FILE — GET /v1/auth with the token; "req/s p99" on stdout.
wrk_auth() {
  wrk -t2 -c64 -d3s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$1/v1/auth" >/dev/null
  wrk -t2 -c64 -d"$WRK_DURATION" --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$1/v1/auth" >"$2"
  grep -q ' 0 requests\|Non-2xx' "$2" && die "wrk: errors (see $2)"
  awk '/^Requests\/sec:/ { rps = $2 } $1 == "99%" { p99 = $2 } END { printf "%.0f %s\n", rps, p99 }' "$2"
}

log "bare handler (baseline)"
port=$(free_port)
"$BIN_DIR/examples/bench_bare" "127.0.0.1:$port" >"$OUT/bare.log" 2>&1 &
bare=$!
PIDS+=("$bare")
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/v1/auth" && break; sleep 0.1; done
read -r BARE_RPS BARE_P99 < <(wrk_auth "$port" "$OUT/bare.wrk")
kill "$bare"; wait "$bare" 2>/dev/null || true
log "  bare: $BARE_RPS req/s, p99 $BARE_P99"

# api N — starts a replica API, waits until current; "ready_ms rss_kb hwm_kb req/s p99".
api() {
  local n=$1 port pid started ready body
  port=$(free_port)
  started=$(date +%s%3N)
  env "${ENV[@]}" REVOKD_READ_MODE=replica REVOKD_LISTEN="127.0.0.1:$port" "$REVOKD" serve --roles api >"$OUT/api-$n.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  while :; do
    body=$(curl -s --max-time 2 "http://127.0.0.1:$port/readyz" || true)
    [[ $body == *'"replica":"current"'* ]] && break
    kill -0 "$pid" 2>/dev/null || die "api exited (see $OUT/api-$n.log)"
    sleep 0.05
  done
  ready=$(date +%s%3N)
  sleep 2
  local rss hwm
  rss=$(vm_kb "$pid" VmRSS) hwm=$(vm_kb "$pid" VmHWM)
  # What the RSS is made of (anonymous, huge pages, lazily freed), kept.
  cat "/proc/$pid/smaps_rollup" >"$OUT/smaps-$n.txt" 2>/dev/null || true
  if [[ $n == 0 ]]; then
    echo "$((ready - started)) $rss $hwm - -"
  else
    echo "$((ready - started)) $rss $hwm $(wrk_auth "$port" "$OUT/auth-$n.wrk")"
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

read -r _ RSS0 _ _ _ < <(api 0)
log "empty replica: RSS $RSS0 kB"
have=0
rows=()
for n in $SIZES; do
  log "$n revocations in Postgres (+$((n - have)))"
  now=$(date +%s)
  pg "$DB_URL" <<SQL
insert into revoked_tokens (token_id, subject, expires_at, revoked_at, reason, requested_by)
select replace(gen_random_uuid()::text, '-', ''), 'bench-user-' || (g % 10000), $now + 21600, $now, 'bench', 'bench'
from generate_series(1, $((n - have))) g;
vacuum analyze revoked_tokens;
SQL
  have=$n
  read -r ready rss hwm rps p99 < <(api "$n")
  per=$(((rss - RSS0) * 1024 / n))
  ratio=$(awk -v a="$rps" -v b="$BARE_RPS" 'BEGIN { printf "%.2f", a / b }')
  row=$(printf '| %10s | %6.1f s | %4d B | %6.0f MiB | %6.0f MiB | %6s req/s | %4s | %8s |' \
    "$n" "$(awk -v m="$ready" 'BEGIN { print m / 1000 }')" "$per" "$((rss / 1024))" "$((hwm / 1024))" "$rps" "$ratio" "$p99")
  log "$row"
  rows+=("$row")
done

{
  echo "bare handler: $BARE_RPS req/s, p99 $BARE_P99 (wrk -t2 -c64 -d$WRK_DURATION); empty replica RSS $((RSS0 / 1024)) MiB"
  echo "| entries    | current after | bytes/entry | RSS | peak RSS | /v1/auth | ×bare | p99 |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$OUT/table.txt"
