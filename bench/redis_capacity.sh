#!/usr/bin/env bash
# bench/redis_capacity.sh — what one Redis primary can carry: the primary's
# CPU time and memory per revocation, measured on a private redis-server
# that only revokd uses (so `INFO` counts revokd alone).
#
#   bash bench/redis_capacity.sh [REVOKD_BINARY]   # default: target/release/revokd
#
# Starts a redis-server on a free port (no persistence), a fresh database,
# and `revokd serve` (every role, defaults) on them; posts revocations for
# `BENCH_DURATION` (default 20s) by `{"jti","sub","exp"}` with wrk (-c16,
# each request a new jti), waits until every one is in Postgres and Redis,
# then reads the server's `INFO`:
# - CPU: used_cpu_user + used_cpu_sys over the run, per revocation (every
#   command a revocation costs the primary: the queue's push, fetch and
#   completion, the deny-list script and its stream entry, pub/sub);
# - memory: used_memory after the run, before and after a cleanup vacuums
#   the finished jobs, minus the empty server's, per revocation; and
#   `MEMORY USAGE` of sampled `jti:` keys.
# Needs redis-server, redis-cli, wrk, psql, curl. Cleans up what it made.

set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(REVOKD_|JWT_|REDIS_)' || true)
unset DATABASE_URL
PG_SERVER=${BENCH_PG_SERVER:-postgres://postgres@127.0.0.1:5432}
DURATION=${BENCH_DURATION:-20s}
BIN=${1:-$ROOT/target/release/revokd}
OUT=$(mktemp -d)
export RUST_LOG=warn

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
id=$(tr -d - </proc/sys/kernel/random/uuid)
db="revokd_bench_${id}" prefix="revokd:"
rport=$(free_port) port=$(free_port)
R=(redis-cli -p "$rport")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -KILL "$pid" 2>/dev/null || true; done
  psql "$PG_SERVER/postgres" -X -q -c "drop database if exists \"$db\" with (force)" 2>/dev/null || true
  rm -rf "$OUT"
}
trap cleanup EXIT

redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$OUT" >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do "${R[@]}" ping >/dev/null 2>&1 && break; sleep 0.05; done
info() { "${R[@]}" info "$1" | tr -d '\r' | awk -F: -v k="$2" '$1 == k { print $2 }'; }
empty_mem=$(info memory used_memory)

DATABASE_URL="$PG_SERVER/$db" REDIS_URL="redis://127.0.0.1:$rport" REVOKD_API_KEYS=bench:bench-key \
  JWT_SECRET="bench-secret-that-is-long-enough-for-hs256" REVOKD_LISTEN="127.0.0.1:$port" \
  REVOKD_SPOOL_DIR="$OUT/spool" "$BIN" serve 2>"$OUT/revokd.log" &
PIDS+=($!)
for _ in $(seq 200); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

cat >"$OUT/post.lua" <<'LUA'
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local n = 0
function request()
  n = n + 1
  local body = string.format('{"jti":"c%d-%d","sub":"bench-%d","exp":%d}', id, n, n, os.time() + 3600)
  return wrk.format("POST", "/v1/revocations", {
    ["Authorization"] = "Bearer bench-key",
    ["Content-Type"] = "application/json",
  }, body)
end
LUA

cpu() { echo "$(info cpu used_cpu_user) + $(info cpu used_cpu_sys)" | bc; }
# What the server spends with revokd idle (polls, heartbeats, the replica's
# blocked reads, its own cron) is not the revocations' cost: measured over
# 5 s first and taken off.
idle_before=$(cpu)
sleep 5
idle=$(echo "($(cpu) - $idle_before) / 5" | bc -l)
cpu_before=$(cpu)
log "posting revocations for $DURATION"
started=$(date +%s.%N)
wrk -t2 -c16 -d"$DURATION" -s "$OUT/post.lua" "http://127.0.0.1:$port" >"$OUT/wrk.txt"
for _ in $(seq 1200); do
  pending=$(psql "$PG_SERVER/$db" -X -At -c "select count(*) from revoked_tokens where in_redis is false")
  queued=$("${R[@]}" llen "${prefix}queue:jobs:active")
  [[ $pending == 0 && $queued == 0 ]] && break
  sleep 0.1
done
took=$(echo "$(date +%s.%N) - $started" | bc)
cpu_after=$(cpu)
"${R[@]}" info commandstats | tr -d '\r' | grep '^cmdstat_' |
  sed -E 's/^cmdstat_([^:]+):calls=([0-9]+),usec=([0-9]+),.*/\3 \2 \1/' | sort -rn | head -8 >"$OUT/commands"
rows=$(psql "$PG_SERVER/$db" -X -At -c "select count(*) from revoked_tokens")
keys=$("${R[@]}" --scan --pattern "${prefix}jti:*" | wc -l)
mem_run=$(info memory used_memory)
log "cleanup (vacuums finished jobs)"
DATABASE_URL="$PG_SERVER/$db" REDIS_URL="redis://127.0.0.1:$rport" "$BIN" cleanup >/dev/null 2>>"$OUT/revokd.log" || { tail -5 "$OUT/revokd.log"; exit 1; }
mem_clean=$(info memory used_memory)
# (head closes the pipe early: redis-cli's SIGPIPE is expected)
sample=$(set +o pipefail; "${R[@]}" --scan --pattern "${prefix}jti:*" | head -1000)
usage=$(for k in $sample; do "${R[@]}" memory usage "$k" samples 0; done | awk '{ s += $1; n++ } END { printf "%.0f", s / n }')
stream=$("${R[@]}" xlen "${prefix}events")
stream_mem=$("${R[@]}" memory usage "${prefix}events" samples 0)

awk -v n="$rows" -v keys="$keys" -v took="$took" -v c0="$cpu_before" -v c1="$cpu_after" -v idle="$idle" -v cmds="$OUT/commands" \
  -v e="$empty_mem" -v m1="$mem_run" -v m2="$mem_clean" -v u="$usage" -v sl="$stream" -v sm="$stream_mem" 'BEGIN {
  us = (c1 - c0 - idle * took) * 1e6 / n
  printf "revocations applied: %d (%d jti keys) in %.1f s: %.0f/s end to end\n", n, keys, took, n / took
  printf "redis-server CPU idle: %.1f ms/s; per revocation above that: %.1f us (user+sys) -> one core saturates near %.0f revocations/s\n", idle * 1000, us, 1e6 / us
  printf "used_memory per revocation: %.0f B with the finished jobs, %.0f B after cleanup -> %.1f M revocations per GiB\n", \
    (m1 - e) / n, (m2 - e) / n, 1073741824 / ((m2 - e) / n) / 1e6
  while ((getline line < cmds) > 0) { split(line, f, " "); top = top sprintf(" %s %.1f us/rev (%d calls);", f[3], f[1] / n, f[2]) }
  printf "server time by command (commandstats, per revocation):%s\n", top
  printf "MEMORY USAGE of a jti key: %s B (1,000 sampled); the events stream: %d entries, %.1f MiB (capped)\n", u, sl, sm / 1048576
}'
