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
# the bare axum handler (`examples/bench_bare`): BENCH_ROUNDS (default 3)
# rounds per size, each the bare handler then the replica back to back, so
# that each ratio compares two runs a few seconds apart; the row gives the
# median ratio (and the range), the median req/s and p99.
#
# Redis is a private redis-server of this run (no persistence), marked as
# holding the whole deny-list without the entries: the replica loads from
# Postgres whatever Redis holds, and rebuilding 10 M keys into Redis first
# would take minutes and measure nothing here. Postgres gets a database of
# this run; both go at the end. Knobs: BENCH_SIZES, BENCH_WRK_DURATION
# (10s), BENCH_ROUNDS (3), BENCH_SKIP_BUILD=1, BENCH_BIN_DIR.

set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(REVOKD_|JWT_)' || true)
unset DATABASE_URL

SIZES=${BENCH_SIZES:-100000 1000000 10000000}
PG_SERVER=${BENCH_PG_SERVER:-postgres://postgres@127.0.0.1:5432}
WRK_DURATION=${BENCH_WRK_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-3}
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

# The bare handler (the baseline) stays up; it idles while the replica runs.
BARE_PORT=$(free_port)
"$BIN_DIR/examples/bench_bare" "127.0.0.1:$BARE_PORT" >"$OUT/bare.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$BARE_PORT/v1/auth" && break; sleep 0.1; done

# to_ms 850.00us|1.23ms|1.01s — wrk's latency in ms.
to_ms() {
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v !~ /ms$/ && v ~ /s$/) n *= 1000; printf "%.2f", n }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# rounds N PORT — BENCH_ROUNDS rounds of bare then replica; "req/s p99
# ratio ratio_min ratio_max bare_req/s" (medians but the range).
rounds() {
  local n=$1 port=$2 r bare_rps bare_p99 rps p99 file="$OUT/rounds-$1.txt"
  : >"$file"
  for r in $(seq "$ROUNDS"); do
    read -r bare_rps bare_p99 < <(wrk_auth "$BARE_PORT" "$OUT/bare-$n-$r.wrk")
    read -r rps p99 < <(wrk_auth "$port" "$OUT/auth-$n-$r.wrk")
    echo "$rps $(to_ms "$p99") $(awk -v a="$rps" -v b="$bare_rps" 'BEGIN { printf "%.3f", a / b }') $bare_rps" >>"$file"
    log "  round $r: bare $bare_rps req/s (p99 $bare_p99), replica $rps req/s (p99 $p99)"
  done
  col() { awk -v c="$1" '{ print $c }' "$file"; }
  printf '%s %sms %s %s %s %s\n' "$(col 1 | median)" "$(col 2 | median)" \
    "$(col 3 | median)" "$(col 3 | sort -g | head -1)" "$(col 3 | sort -g | tail -1)" "$(col 4 | median)"
}

# api N — starts a replica API, waits until current; "ready_ms rss_kb hwm_kb"
# then, but for N = 0, what `rounds` prints.
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
    echo "$((ready - started)) $rss $hwm - - - - - -"
  else
    echo "$((ready - started)) $rss $hwm $(rounds "$n" "$port")"
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

read -r _ RSS0 _ _ _ _ _ _ _ < <(api 0)
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
  read -r ready rss hwm rps p99 ratio low high bare_rps < <(api "$n")
  per=$(((rss - RSS0) * 1024 / n))
  row=$(printf '| %10s | %6.1f s | %4d B | %6.0f MiB | %6.0f MiB | %6.0f req/s | %6.0f req/s | %.2f (%.2f–%.2f) | %8s |' \
    "$n" "$(awk -v m="$ready" 'BEGIN { print m / 1000 }')" "$per" "$((rss / 1024))" "$((hwm / 1024))" \
    "$rps" "$bare_rps" "$ratio" "$low" "$high" "$p99")
  log "$row"
  rows+=("$row")
done

{
  echo "wrk -t2 -c64 -d$WRK_DURATION, $ROUNDS rounds of bare then replica per size (medians); empty replica RSS $((RSS0 / 1024)) MiB"
  echo "| entries    | current after | bytes/entry | RSS | peak RSS | /v1/auth | bare | ×bare (range) | p99 |"
  echo "|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$OUT/table.txt"
