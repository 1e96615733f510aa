#!/usr/bin/env bash
# bench/run.sh — revokd's benchmark suite, one command, one table.
#
#   bash bench/run.sh
#
# Needs Redis and Postgres like the tests do (REDIS_URL, default
# redis://127.0.0.1:6379; BENCH_PG_SERVER, default
# postgres://postgres@127.0.0.1:5432, trust auth, allowed to create
# databases), cargo, and wrk, curl, redis-cli and psql (installed with
# apt-get when missing). Takes 5–10 minutes on 2 cores, the release build
# aside; everything runs on this one machine, one measurement at a time.
#
# What it measures, in order:
#
#  0. Build: `cargo build --release --bin revokd --examples` and the criterion
#     bench `benches/verify.rs`.
#  1. API process RSS (VmRSS of /proc/<pid>/status) of `revokd serve --roles
#     api` in read mode `replica`, once the replica is current, with 0 and
#     (step 7) with 1,000,000 revoked tokens; bytes per entry is the
#     difference over 1,000,000. The peak (VmHWM) and the time from start to
#     `/readyz` saying `"replica":"current"` are shown too.
#  2. 100,000 revoked tokens inserted into `revoked_tokens` (random 32-hex
#     ids, as UUID jtis are, 10,000 subjects) and `revokd rehydrate` copies
#     them into Redis. Every API process below starts with them; in replica
#     mode it loads them and is only measured once `/readyz` says current.
#  3. `wrk -t2 -c64 -d10s --latency` on `GET /v1/auth` with
#     `Authorization: Bearer <token>` (after a 3 s warm-up run), for
#       (a) `examples/bench_bare.rs`: axum answering 200, nothing else — the
#           ceiling;
#       (b) `revokd serve --roles api` with REVOKD_READ_MODE=redis;
#       (c) the same with REVOKD_READ_MODE=replica (the default);
#       (d) replica again with REVOKD_VERIFY_CACHE_SIZE=0: every request
#           verifies its token in full, as for a token never seen before
#           (with the cache on, wrk's one token is verified once);
#     each with an HS256 token (JWT_SECRET) and an ES256 token (the test
#     keys tests/fixtures/keys/ec256_*.pem), minted by `revokd mint --sub
#     bench`. The tokens are not revoked, so every request is a full check
#     (verify + lookup) answering 200; any other answer is flagged.
#     RUST_LOG=warn everywhere.
#  4. Revocation propagation (`examples/bench_propagation.rs`): POST
#     /v1/revocations (no wait) → first GET /v1/auth answering 401 for that
#     token, polled back to back; 500 sequential probes (after 20 warm-up),
#     against the replica-mode API (HS256) and a separate `revokd serve
#     --roles worker` process: once idle, once while the step-3 wrk load runs
#     against the same API.
#  5. Worker apply throughput (`examples/bench_worker.rs`, its own prefix
#     and database): 50,000 revoke jobs pushed with `revokd_jobs::Producer`
#     while no worker runs, then one worker (concurrency 64, the default) started
#     in-process and timed until `revoked_tokens` holds 50,000 rows →
#     revocations/s. The run fails if the row count stops moving for 30 s.
#  6. `cargo bench --bench verify`: criterion, 2 s each: `Verifier::verify`
#     per algorithm family (HS256, RS256, ES256, EdDSA); the same followed by
#     `Replica::lookup` in a replica holding 100,000 revoked tokens
#     (verify+lookup); the same through a warm verify cache (cached+lookup);
#     and that lookup alone, for a revoked id (hit) and one not revoked
#     (miss).
#  7. The 1,000,000-entry RSS of step 1 (tables emptied and the prefix's keys
#     deleted first, so the replica holds exactly the loaded set).
#  8. Idle connections (`bench/idle_connections.py`): BENCH_IDLE_CONNECTIONS
#     (10,000) connections to a redis-mode `revokd serve --roles api`, each
#     after one `GET /healthz`, held idle; the API's VmRSS and open fds
#     before and with them.
#
# Besides req/s and latency, each wrk row has the CPU time (user + system,
# from /proc/<pid>/stat) the server process spent per request over the
# measured run, plus redis-server's in redis mode (the local one, whose pid
# Redis reports; on a shared server that includes other clients' work). The
# "RSS growth" row is how much the replica-mode API's VmRSS grew over its two
# wrk runs (3 s warm-up + measured run) while nothing scraped /metrics.
# Before each measurement the script checks that other processes leave the
# CPUs idle (≤ 15 % busy over 1 s), waiting up to BENCH_QUIET_WAIT seconds in
# all (default 180); a row measured on a busier machine is marked (*N%).
#
# Then it prints one table with the targets: replica mode ≥ 70 % of the bare
# handler's req/s and ≥ 3× redis mode's; propagation p99 ≤ 20 ms idle; worker
# ≥ 5,000 revocations/s. Targets are reported, never enforced: the exit code
# is 0 whenever every measurement ran.
#
# Isolation and cleanup: every Redis key it creates starts with a unique
# `revokd-bench-<uuid>:` prefix and every row lives in its own database
# `revokd_bench_<uuid>`. On exit — success, failure or Ctrl-C — it stops
# every process it started (by pid), deletes exactly the keys under its
# prefix (SCAN + DEL), removes its queue from `core:apalis:queues:list` and
# drops its database. Nothing else on the shared servers is touched.
# Raw outputs (wrk, logs, the table) stay in target/bench/<timestamp>/.
#
# Knobs (environment): BENCH_WRK_DURATION (10s), BENCH_WRK_CONNECTIONS (64),
# BENCH_WRK_THREADS (2), BENCH_ENTRIES (100000), BENCH_RSS_ENTRIES (1000000),
# BENCH_PROPAGATION_N (500), BENCH_WORKER_JOBS (50000), BENCH_QUIET_WAIT (180),
# BENCH_IDLE_CONNECTIONS (10000),
# BENCH_SKIP_BUILD=1 (use the binaries already in target/release).

set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# A reproducible configuration: nothing revokd reads comes from the caller.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(REVOKD_|JWT_)' || true)
unset DATABASE_URL

REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PG_SERVER=${BENCH_PG_SERVER:-postgres://postgres@127.0.0.1:5432}
PG_SERVER=${PG_SERVER%/}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_CONNECTIONS=${BENCH_WRK_CONNECTIONS:-64}
WRK_DURATION=${BENCH_WRK_DURATION:-10s}
WRK_WARMUP=3s
ENTRIES=${BENCH_ENTRIES:-100000}
RSS_ENTRIES=${BENCH_RSS_ENTRIES:-1000000}
PROPAGATION_N=${BENCH_PROPAGATION_N:-500}
WORKER_JOBS=${BENCH_WORKER_JOBS:-50000}
WORKER_STALL_SECS=30
IDLE_CONNECTIONS=${BENCH_IDLE_CONNECTIONS:-10000}

ID=$(cat /proc/sys/kernel/random/uuid | tr -d -)
PREFIX="revokd-bench-${ID}:"
DB="revokd_bench_${ID}"
DB_URL="$PG_SERVER/$DB"
SECRET="bench-secret-${ID}"
API_KEY="bench-key-${ID}"
KEYS="$ROOT/tests/fixtures/keys"
OUT="$ROOT/target/bench/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
RESULTS="$OUT/results.env"
: >"$RESULTS"
REVOKD="$ROOT/target/release/revokd"
EXAMPLES="$ROOT/target/release/examples"

export REDIS_URL RUST_LOG=warn
HS256_ENV=(JWT_SECRET="$SECRET")
ES256_ENV=(JWT_ALGORITHM=ES256 JWT_PUBLIC_KEY_FILE="$KEYS/ec256_public.pem"
  JWT_PRIVATE_KEY_FILE="$KEYS/ec256_private.pem")
# What every revokd command of this run shares.
COMMON_ENV=(DATABASE_URL="$DB_URL" REVOKD_KEY_PREFIX="$PREFIX"
  REVOKD_API_KEYS="bench:$API_KEY")

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
record() { printf '%s=%q\n' "$1" "$2" >>"$RESULTS"; }

# ---------------------------------------------------------------- processes

PIDS=()

forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

# stop PID: SIGTERM, then SIGKILL after 10 s.
stop() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || { forget_pid "$pid"; return 0; }
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

redis() { redis-cli -u "$REDIS_URL" "$@"; }
pg() { psql "$1" -X -q -v ON_ERROR_STOP=1 -At "${@:2}"; }

# Every key under $PREFIX: SCAN (never KEYS: the server is shared), and one
# DEL per SCAN batch. The prefix and every key revokd makes under it are
# free of spaces and quotes, so keys pass as plain words.
delete_prefix_keys() {
  local cursor=0 reply
  while :; do
    mapfile -t reply < <(redis --raw scan "$cursor" match "${PREFIX}*" count 5000)
    ((${#reply[@]} > 0)) || return 1
    cursor=${reply[0]}
    if ((${#reply[@]} > 1)); then
      printf 'DEL%s\n' "$(printf ' %s' "${reply[@]:1}")" | redis >/dev/null
    fi
    [[ $cursor == 0 ]] && return 0
  done
}

CLEANED=0
cleanup() {
  local status=$?
  trap - EXIT INT TERM ERR
  [[ $CLEANED == 1 ]] && return
  CLEANED=1
  local pid
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  log "cleanup: Redis keys ${PREFIX}*, database $DB"
  delete_prefix_keys || log "Redis cleanup failed"
  redis zrem core:apalis:queues:list "${PREFIX}queue:jobs:workers" >/dev/null || true
  pg "$PG_SERVER/postgres" -c "drop database if exists \"$DB\" with (force)" ||
    log "dropping database $DB failed"
  log "raw outputs in ${OUT#"$ROOT"/}"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR

# A port nothing listens on, below the ephemeral range (whose ports client
# sockets — wrk's, the pools' — may hold, which makes bind fail).
free_port() {
  local low port
  low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  ((low > 12000)) || low=32768
  while :; do
    port=$((10000 + RANDOM % (low - 10000)))
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

# start_revokd NAME MODE ROLES PORT ENV... — runs `revokd serve` in the
# background; its pid is in $SERVER_PID.
start_revokd() {
  local name=$1 mode=$2 roles=$3 port=$4
  shift 4
  env "${COMMON_ENV[@]}" "$@" REVOKD_READ_MODE="$mode" REVOKD_LISTEN="127.0.0.1:$port" \
    "$REVOKD" serve --roles "$roles" >"$OUT/$name.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
}

# wait_ready PORT PID WANT [TIMEOUT_S] — until /readyz says ready and
# "replica":WANT (current, or off in redis mode).
wait_ready() {
  local port=$1 pid=$2 want=$3 timeout=${4:-120} body deadline
  deadline=$((SECONDS + timeout))
  while :; do
    body=$(curl -s --max-time 2 "http://127.0.0.1:$port/readyz" || true)
    [[ $body == *'"ready":true'* && $body == *"\"replica\":\"$want\""* ]] && return 0
    kill -0 "$pid" 2>/dev/null || die "process $pid exited before ready (see $OUT)"
    ((SECONDS < deadline)) || die "not ready within ${timeout}s on port $port: $body"
    sleep 0.1
  done
}

vm_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# cpu_busy_pct SECONDS — share (0-100) of all CPUs busy over the interval.
cpu_busy_pct() {
  local before after
  before=$(head -1 /proc/stat)
  sleep "$1"
  after=$(head -1 /proc/stat)
  awk -v a="$before" -v b="$after" 'BEGIN {
    split(a, x); split(b, y)  # cpu user nice system idle iowait irq softirq steal
    busy = (y[2] + y[3] + y[4] + y[7] + y[8] + y[9]) - (x[2] + x[3] + x[4] + x[7] + x[8] + x[9])
    idle = (y[5] + y[6]) - (x[5] + x[6])
    total = busy + idle
    if (total > 0) printf "%.0f", 100 * busy / total; else print 0 }'
}

# quiet KEY — before a measurement, while nothing of ours is under load:
# waits (up to BENCH_QUIET_WAIT seconds over the whole run, default 180)
# until other processes use at most 15 % of the CPUs, and records what it
# saw. The machine is shared; a busy one makes every number below lower
# and noisier, so the table says when that happened.
QUIET_BUDGET=${BENCH_QUIET_WAIT:-180}
MAX_BUSY=0
quiet() {
  local busy
  busy=$(cpu_busy_pct 1)
  while ((busy > 15 && QUIET_BUDGET > 0)); do
    log "  machine busy before $1 ($busy % of the CPUs in use by other processes); waiting"
    sleep 4
    QUIET_BUDGET=$((QUIET_BUDGET - 5))
    busy=$(cpu_busy_pct 1)
  done
  record "busy_$1" "$busy"
  if ((busy > MAX_BUSY)); then MAX_BUSY=$busy; fi
  return 0
}

# ---------------------------------------------------------------- wrk

# to_ms VALUE — wrk's 512.00us / 1.23ms / 2.01s / 1.00m as milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
    printf "%.2f", n }'
}

# parse_wrk FILE KEY — records KEY_rps, KEY_p50, KEY_p99, KEY_bad.
parse_wrk() {
  local file=$1 key=$2 rps p50 p99 bad errors
  rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$file")
  p50=$(awk '$1 == "50%" { print $2 }' "$file")
  p99=$(awk '$1 == "99%" { print $2 }' "$file")
  bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$file")
  errors=$(awk '/Socket errors:/ { s = 0; for (i = 4; i <= NF; i += 2) s += $i + 0; print s }' "$file")
  [[ -n $rps && -n $p50 && -n $p99 ]] || die "cannot parse $file"
  record "${key}_rps" "$rps"
  record "${key}_p50" "$(to_ms "$p50")"
  record "${key}_p99" "$(to_ms "$p99")"
  record "${key}_bad" "$((${bad:-0} + ${errors:-0}))"
  log "  $key: $rps req/s, p50 $(to_ms "$p50") ms, p99 $(to_ms "$p99") ms, non-2xx/errors $((${bad:-0} + ${errors:-0}))"
}

wrk_run() { # URL TOKEN DURATION OUTFILE
  wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$3" --latency \
    -H "Authorization: Bearer $2" "$1" >"$4"
}

CLK_TCK=$(getconf CLK_TCK)
# cpu_ticks PID — user + system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# The local redis-server's pid, to charge its CPU to redis mode; empty when
# Redis is not a process of this machine.
REDIS_PID=$(redis info server | tr -d '\r' | awk -F: '$1 == "process_id" { print $2 }')
[[ -n $REDIS_PID && $(cat "/proc/$REDIS_PID/comm" 2>/dev/null) == redis-server* ]] || REDIS_PID=

# measure_auth KEY PORT TOKEN PID — warm-up, then the measured run; also
# records the CPU time the server (PID) and redis-server spent per request.
measure_auth() {
  local key=$1 url="http://127.0.0.1:$2/v1/auth" token=$3 pid=$4 code s0 s1 r0 r1 requests
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$url")
  [[ $code == 200 ]] || die "$key: GET /v1/auth answered $code, expected 200"
  quiet "$key"
  wrk_run "$url" "$token" "$WRK_WARMUP" "$OUT/$key.warmup.wrk"
  s0=$(cpu_ticks "$pid") r0=$(if [[ -n $REDIS_PID ]]; then cpu_ticks "$REDIS_PID"; else echo 0; fi)
  wrk_run "$url" "$token" "$WRK_DURATION" "$OUT/$key.wrk"
  s1=$(cpu_ticks "$pid") r1=$(if [[ -n $REDIS_PID ]]; then cpu_ticks "$REDIS_PID"; else echo 0; fi)
  parse_wrk "$OUT/$key.wrk" "$key"
  requests=$(awk '/requests in/ { print $1 }' "$OUT/$key.wrk")
  record "${key}_cpu_us" "$(awk -v t=$((s1 - s0)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print 0 }')"
  record "${key}_redis_cpu_us" "$(awk -v t=$((r1 - r0)) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print 0 }')"
}

# ---------------------------------------------------------------- data

# load_tokens N — N live revocations (random 32-hex ids, 10,000 subjects,
# ending in 6 h) into Postgres, then `revokd rehydrate` into Redis.
load_tokens() {
  local n=$1 now report
  now=$(date +%s)
  pg "$DB_URL" <<SQL
insert into revoked_tokens (token_id, subject, expires_at, revoked_at, reason, requested_by)
select replace(gen_random_uuid()::text, '-', ''), 'bench-user-' || (g % 10000),
       $now + 21600, $now, 'bench', 'bench'
from generate_series(1, $n) g;
vacuum analyze revoked_tokens;
SQL
  report=$(env "${COMMON_ENV[@]}" "${HS256_ENV[@]}" "$REVOKD" rehydrate)
  log "  rehydrate: $report"
  [[ $report == *"\"tokens\":$n"* ]] || die "rehydrate did not restore $n tokens: $report"
}

# replica_rss KEY — starts a replica-mode API, waits until current, records
# RSS, peak and load time, stops it.
replica_rss() {
  local key=$1 port started_ms ready_ms pid
  port=$(free_port)
  started_ms=$(date +%s%3N)
  start_revokd "$key" replica api "$port" "${HS256_ENV[@]}"
  pid=$SERVER_PID
  wait_ready "$port" "$pid" current 300
  ready_ms=$(date +%s%3N)
  sleep 3
  record "${key}_rss_kb" "$(vm_kb "$pid" VmRSS)"
  record "${key}_hwm_kb" "$(vm_kb "$pid" VmHWM)"
  record "${key}_ready_ms" "$((ready_ms - started_ms))"
  log "  $key: VmRSS $(vm_kb "$pid" VmRSS) kB, VmHWM $(vm_kb "$pid" VmHWM) kB, current after $((ready_ms - started_ms)) ms"
  stop "$pid"
}

# ---------------------------------------------------------------- tools

need() { # COMMAND DEBIAN-PACKAGE
  command -v "$1" >/dev/null && return 0
  log "$1 missing: apt-get install -y $2"
  local sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get install -y "$2" >/dev/null 2>&1 ||
    { "${sudo[@]}" apt-get update >/dev/null 2>&1 && "${sudo[@]}" apt-get install -y "$2" >/dev/null; } ||
    die "cannot install $2"
}
need wrk wrk
need curl curl
need redis-cli redis-tools
need psql postgresql-client
command -v cargo >/dev/null || die "cargo is missing (install Rust)"

redis ping >/dev/null || die "Redis at $REDIS_URL does not answer"
pg "$PG_SERVER/postgres" -c 'select 1' >/dev/null || die "Postgres at $PG_SERVER does not answer"

T0=$SECONDS
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "build: cargo build --release --bin revokd --examples; cargo bench --bench verify --no-run"
  cargo build --release --bin revokd --examples
  cargo bench --bench verify --no-run >/dev/null 2>"$OUT/bench-build.log" ||
    { cat "$OUT/bench-build.log" >&2; die "building benches/verify.rs"; }
fi
for bin in "$REVOKD" "$EXAMPLES/bench_bare" "$EXAMPLES/bench_propagation" "$EXAMPLES/bench_worker"; do
  [[ -x $bin ]] || die "$bin is missing (build first)"
done
T_BUILT=$SECONDS

log "prefix $PREFIX, database $DB, outputs ${OUT#"$ROOT"/}"
env "${COMMON_ENV[@]}" "${HS256_ENV[@]}" "$REVOKD" migrate >/dev/null
env "${COMMON_ENV[@]}" "${HS256_ENV[@]}" "$REVOKD" rehydrate >/dev/null # sets the marker

# ---------------------------------------------------------------- 1. RSS, empty

log "1. API RSS with an empty deny-list"
replica_rss rss0

# ---------------------------------------------------------------- 2. data

log "2. $ENTRIES revoked tokens into Postgres and Redis"
load_tokens "$ENTRIES"
HS256_TOKEN=$(env "${HS256_ENV[@]}" "$REVOKD" mint --sub bench --ttl 2h)
ES256_TOKEN=$(env "${ES256_ENV[@]}" "$REVOKD" mint --sub bench --ttl 2h)

# ---------------------------------------------------------------- 3. wrk

log "3. wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION --latency GET /v1/auth"
port=$(free_port)
"$EXAMPLES/bench_bare" "127.0.0.1:$port" >"$OUT/bare.log" 2>&1 &
bare_pid=$!
PIDS+=("$bare_pid")
for _ in $(seq 100); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/auth") == 200 ]] && break
  sleep 0.1
done
measure_auth bare_hs256 "$port" "$HS256_TOKEN" "$bare_pid"
measure_auth bare_es256 "$port" "$ES256_TOKEN" "$bare_pid"
stop "$bare_pid"

for alg in hs256 es256; do
  if [[ $alg == hs256 ]]; then alg_env=("${HS256_ENV[@]}") token=$HS256_TOKEN; else alg_env=("${ES256_ENV[@]}") token=$ES256_TOKEN; fi
  for mode in redis replica nocache; do
    port=$(free_port)
    # nocache: read mode replica with the verify cache off, so every request
    # verifies its token in full (the cost of a token seen for the first time).
    read_mode=${mode/nocache/replica}
    mode_env=()
    [[ $mode == nocache ]] && mode_env=(REVOKD_VERIFY_CACHE_SIZE=0)
    start_revokd "${mode}_${alg}" "$read_mode" api "$port" "${alg_env[@]}" "${mode_env[@]+"${mode_env[@]}"}"
    pid=$SERVER_PID
    if [[ $read_mode == replica ]]; then wait_ready "$port" "$pid" current; else wait_ready "$port" "$pid" off; fi
    rss_before=$(vm_kb "$pid" VmRSS)
    measure_auth "${mode}_${alg}" "$port" "$token" "$pid"
    record "${mode}_${alg}_rss_growth_kb" "$(($(vm_kb "$pid" VmRSS) - rss_before))"
    if [[ $mode == replica && $alg == hs256 ]]; then
      # ---------------------------------------------------- 4. propagation
      log "4. propagation: POST /v1/revocations → first 401 on GET /v1/auth"
      start_revokd worker replica worker "$(free_port)" "${HS256_ENV[@]}"
      worker_pid=$SERVER_PID
      prop() { # LABEL
        env "${HS256_ENV[@]}" BENCH_URL="http://127.0.0.1:$port" BENCH_API_KEY="$API_KEY" \
          BENCH_N="$PROPAGATION_N" BENCH_LABEL="$1" "$EXAMPLES/bench_propagation" \
          >"$OUT/propagation_$1.txt" 2>>"$OUT/propagation.log" ||
          { tail -20 "$OUT/propagation.log" >&2; die "bench_propagation ($1)"; }
        local line
        line=$(grep '^propagation ' "$OUT/propagation_$1.txt") || die "propagation $1: no result"
        log "  $line"
        for kv in $line; do
          [[ $kv == *=* && $kv != label=* ]] && record "prop_$1_${kv%%=*}" "${kv#*=}"
        done
        return 0
      }
      quiet prop_idle
      prop idle
      # wrk itself (not a subshell), so that SIGINT reaches it: it then
      # stops and prints its statistics for the time it ran.
      wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d600s --latency \
        -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/auth" \
        >"$OUT/propagation_load.wrk" &
      wrk_pid=$!
      PIDS+=("$wrk_pid")
      sleep 2
      prop load
      kill -INT "$wrk_pid"
      wait "$wrk_pid" || true
      forget_pid "$wrk_pid"
      parse_wrk "$OUT/propagation_load.wrk" prop_load_wrk
      stop "$worker_pid"
    fi
    stop "$pid"
  done
done

# ---------------------------------------------------------------- 5. worker

log "5. worker throughput: $WORKER_JOBS-job backlog"
quiet worker
env BENCH_DATABASE_URL="$PG_SERVER/postgres" BENCH_JOBS="$WORKER_JOBS" BENCH_STALL_SECS="$WORKER_STALL_SECS" \
  "$EXAMPLES/bench_worker" >"$OUT/worker.txt" 2>"$OUT/worker.log" ||
  { tail -20 "$OUT/worker.log" >&2; die "bench_worker"; }
line=$(grep '^worker ' "$OUT/worker.txt") || die "bench_worker: no result"
log "  $line"
for kv in $line; do [[ $kv == *=* ]] && record "worker_${kv%%=*}" "${kv#*=}"; done

# ---------------------------------------------------------------- 6. criterion

log "6. criterion: verify, verify+lookup, cached+lookup per algorithm family; replica lookup"
quiet criterion
cargo bench --bench verify -- --output-format bencher >"$OUT/criterion.txt" 2>"$OUT/criterion.log" ||
  { tail -20 "$OUT/criterion.log" >&2; die "cargo bench --bench verify"; }
while read -r name ns; do
  # verify/HS256 → verify_HS256_ns, verify+lookup/HS256 → verify_lookup_HS256_ns,
  # replica_lookup/hit → replica_lookup_hit_ns.
  record "$(tr -cs 'A-Za-z0-9' _ <<<"$name")ns" "$ns"
  log "  $name: $ns ns"
done < <(awk '$1 == "test" && $3 == "..." { gsub(",", "", $5); print $2, $5 }' "$OUT/criterion.txt")

# ---------------------------------------------------------------- 7. RSS, 1M

log "7. API RSS with $RSS_ENTRIES entries"
pg "$DB_URL" -c 'truncate revoked_tokens, subject_watermarks, revocation_audit'
delete_prefix_keys
load_tokens "$RSS_ENTRIES"
replica_rss rss1m

# ---------------------------------------------------------------- 8. idle connections

log "8. $IDLE_CONNECTIONS idle kept-alive connections to one API (read mode redis)"
# The client holds one descriptor per connection; revokd raises its own soft limit.
ulimit -Sn "$(ulimit -Hn)"
(($(ulimit -Sn) > IDLE_CONNECTIONS + 256)) || die "ulimit -n $(ulimit -Hn) is too low for $IDLE_CONNECTIONS connections"
port=$(free_port)
start_revokd idle redis api "$port" "${HS256_ENV[@]}" REVOKD_MAX_CONNECTIONS="$IDLE_CONNECTIONS"
pid=$SERVER_PID
wait_ready "$port" "$pid" off
python3 "$ROOT/bench/idle_connections.py" "127.0.0.1:$port" "$pid" "$IDLE_CONNECTIONS" >"$OUT/idle.txt" ||
  die "bench/idle_connections.py"
line=$(grep '^idle ' "$OUT/idle.txt") || die "idle connections: no result"
log "  $(tail -1 "$OUT/idle.txt")"
for kv in $line; do [[ $kv == *=* ]] && record "idle_${kv%%=*}" "${kv#*=}"; done
stop "$pid"

T_END=$SECONDS

# ---------------------------------------------------------------- the table

# shellcheck disable=SC1090
source "$RESULTS"
fmt_int() { sed -E ':a; s/^([0-9]+)([0-9]{3})/\1,\2/; ta' <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }' && echo yes || echo NO; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0) }' && echo yes || echo NO; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
us() { awk -v n="$1" 'BEGIN { printf "%.2f us", n / 1000 }'; }
ns() { printf '%s ns' "$(fmt_int "$1")"; }
flag() { [[ ${1:-0} == 0 ]] && echo "" || echo " [$1 non-2xx/errors]"; }

ratio_bare_hs=$(ratio "$replica_hs256_rps" "$bare_hs256_rps")
ratio_bare_es=$(ratio "$replica_es256_rps" "$bare_es256_rps")
ratio_redis_hs=$(ratio "$replica_hs256_rps" "$redis_hs256_rps")
ratio_redis_es=$(ratio "$replica_es256_rps" "$redis_es256_rps")
bytes_per_entry=$(awk -v a="$rss1m_rss_kb" -v b="$rss0_rss_kb" -v n="$RSS_ENTRIES" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }')

row() { printf '| %-46s | %-24s | %-24s | %-13s | %-7s |\n' "$@"; }
sep() { printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..48})" "$(printf -- '-%.0s' {1..26})" \
  "$(printf -- '-%.0s' {1..26})" "$(printf -- '-%.0s' {1..15})" "$(printf -- '-%.0s' {1..9})"; }
lat() { printf '%s / %s ms' "$1" "$2"; }
# busy KEY — " (*)" when other processes were using the machine before it.
busy() { local v="busy_$1"; ((${!v:-0} > 15)) && echo " (*${!v}%)" || true; }
rps() { printf '%s%s%s' "$(fmt_int "${!1}")" "$(flag "${!2}")" "$(busy "$3")"; }
cpu_row() { # KEY — server CPU microseconds per request (+ redis-server's when it did work)
  local s="${1}_cpu_us" r="${1}_redis_cpu_us"
  if [[ $1 == redis_* && -n $REDIS_PID ]]; then printf '%s + redis %s us' "${!s}" "${!r}"; else printf '%s us' "${!s}"; fi
}

{
  echo
  echo "revokd benchmark — $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src jobs migrations Cargo.toml 2>/dev/null || echo ' + uncommitted changes')"
  echo "$(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM; wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION --latency on GET /v1/auth; $(fmt_int "$ENTRIES") revoked entries loaded"
  echo
  row "measurement" "HS256" "ES256" "target" "met"
  sep
  row "1a bare axum handler: req/s" "$(rps bare_hs256_rps bare_hs256_bad bare_hs256)" "$(rps bare_es256_rps bare_es256_bad bare_es256)" "" ""
  row "   p50 / p99" "$(lat "$bare_hs256_p50" "$bare_hs256_p99")" "$(lat "$bare_es256_p50" "$bare_es256_p99")" "" ""
  row "   server CPU per request" "$(cpu_row bare_hs256)" "$(cpu_row bare_es256)" "" ""
  row "1b /v1/auth, read mode redis: req/s" "$(rps redis_hs256_rps redis_hs256_bad redis_hs256)" "$(rps redis_es256_rps redis_es256_bad redis_es256)" "" ""
  row "   p50 / p99" "$(lat "$redis_hs256_p50" "$redis_hs256_p99")" "$(lat "$redis_es256_p50" "$redis_es256_p99")" "" ""
  row "   server CPU per request" "$(cpu_row redis_hs256)" "$(cpu_row redis_es256)" "" ""
  row "1c /v1/auth, read mode replica: req/s" "$(rps replica_hs256_rps replica_hs256_bad replica_hs256)" "$(rps replica_es256_rps replica_es256_bad replica_es256)" "" ""
  row "   p50 / p99" "$(lat "$replica_hs256_p50" "$replica_hs256_p99")" "$(lat "$replica_es256_p50" "$replica_es256_p99")" "" ""
  row "   server CPU per request" "$(cpu_row replica_hs256)" "$(cpu_row replica_es256)" "" ""
  row "1d replica, verify cache off: req/s" "$(rps nocache_hs256_rps nocache_hs256_bad nocache_hs256)" "$(rps nocache_es256_rps nocache_es256_bad nocache_es256)" "" ""
  row "   p50 / p99" "$(lat "$nocache_hs256_p50" "$nocache_hs256_p99")" "$(lat "$nocache_es256_p50" "$nocache_es256_p99")" "" ""
  row "   server CPU per request" "$(cpu_row nocache_hs256)" "$(cpu_row nocache_es256)" "" ""
  row "2  replica / bare (req/s)" "$ratio_bare_hs" "$ratio_bare_es" ">= 0.70" "$(ge "$ratio_bare_hs" 0.70)/$(ge "$ratio_bare_es" 0.70)"
  row "   replica / redis (req/s)" "$ratio_redis_hs" "$ratio_redis_es" ">= 3.0" "$(ge "$ratio_redis_hs" 3)/$(ge "$ratio_redis_es" 3)"
  row "   cache off: / bare, / redis" "$(ratio "$nocache_hs256_rps" "$bare_hs256_rps"), $(ratio "$nocache_hs256_rps" "$redis_hs256_rps")" "$(ratio "$nocache_es256_rps" "$bare_es256_rps"), $(ratio "$nocache_es256_rps" "$redis_es256_rps")" "" ""
  row "3  propagation idle: p50 / p99 (n=$prop_idle_n)$(busy prop_idle)" "$(lat "$prop_idle_p50_ms" "$prop_idle_p99_ms")" "" "p99 <= 20 ms" "$(le "$prop_idle_p99_ms" 20)"
  row "   idle: p90 / max; POST alone p50" "$(lat "$prop_idle_p90_ms" "$prop_idle_max_ms")" "POST $prop_idle_post_p50_ms ms" "" ""
  row "   under wrk load: p50 / p99 (n=$prop_load_n)" "$(lat "$prop_load_p50_ms" "$prop_load_p99_ms")" "" "" ""
  row "   under load: p90 / max; POST alone p50" "$(lat "$prop_load_p90_ms" "$prop_load_max_ms")" "POST $prop_load_post_p50_ms ms" "" ""
  row "   the wrk load meanwhile: req/s; p99" "$(fmt_int "$prop_load_wrk_rps")$(flag "$prop_load_wrk_bad")" "p99 $prop_load_wrk_p99 ms" "" ""
  if [[ ${prop_idle_timeouts:-0} != 0 || ${prop_load_timeouts:-0} != 0 ]]; then
    row "   probes not seen revoked within 5 s" "idle $prop_idle_timeouts" "load $prop_load_timeouts" "" ""
  fi
  row "4  worker, $(fmt_int "$worker_jobs")-job backlog: revocations/s$(busy worker)" "$(fmt_int "$worker_applied_per_s")" "after 1st row $(fmt_int "$worker_steady_per_s")" ">= 5,000" "$(ge "$worker_applied_per_s" 5000)"
  row "   drain time (worker concurrency $worker_concurrency)" "$worker_drain_s s" "1st row after $worker_first_row_ms ms" "" ""
  row "   push rate (no worker running)" "$(fmt_int "$worker_push_per_s")/s" "" "" ""
  row "5  API RSS, replica, 0 entries" "$(mib "$rss0_rss_kb")" "peak $(mib "$rss0_hwm_kb")" "" ""
  row "   API RSS, replica, $(fmt_int "$RSS_ENTRIES") entries" "$(mib "$rss1m_rss_kb")" "peak $(mib "$rss1m_hwm_kb")" "" ""
  row "   bytes per entry (RSS difference / entries)" "$bytes_per_entry" "" "" ""
  row "   start to replica current, 0 / $(fmt_int "$RSS_ENTRIES")" "$rss0_ready_ms ms" "$rss1m_ready_ms ms" "" ""
  row "   $(fmt_int "$idle_n") idle connections: RSS, fds" "+$(mib $((idle_rss1_kb - idle_rss0_kb)))" "+$((idle_fds1 - idle_fds0)) fds" "" ""
  row "   per idle connection" "$(awk -v a="$idle_rss1_kb" -v b="$idle_rss0_kb" -v n="$idle_n" 'BEGIN { printf "%.1f KiB", (a - b) / n }')" "" "" ""
  row "   RSS growth over 1c's wrk runs (no scrape)" "+$(mib "$replica_hs256_rss_growth_kb")" "+$(mib "$replica_es256_rss_growth_kb")" "" ""
  row "6  verify (criterion): HS256 | ES256$(busy criterion)" "$(us "$verify_HS256_ns")" "$(us "$verify_ES256_ns")" "" ""
  row "   verify (criterion): RS256 | EdDSA" "RS256 $(us "$verify_RS256_ns")" "EdDSA $(us "$verify_EdDSA_ns")" "" ""
  row "   verify+lookup (criterion): HS256 | ES256" "$(us "$verify_lookup_HS256_ns")" "$(us "$verify_lookup_ES256_ns")" "" ""
  row "   verify+lookup (criterion): RS256 | EdDSA" "RS256 $(us "$verify_lookup_RS256_ns")" "EdDSA $(us "$verify_lookup_EdDSA_ns")" "" ""
  row "   cached+lookup (criterion): HS256 | ES256" "$(us "$cached_lookup_HS256_ns")" "$(us "$cached_lookup_ES256_ns")" "" ""
  row "   cached+lookup (criterion): RS256 | EdDSA" "RS256 $(us "$cached_lookup_RS256_ns")" "EdDSA $(us "$cached_lookup_EdDSA_ns")" "" ""
  row "   replica lookup, $(fmt_int 100000) entries: hit | miss" "hit $(ns "$replica_lookup_hit_ns")" "miss $(ns "$replica_lookup_miss_ns")" "" ""
  echo
  echo "Build $((T_BUILT - T0)) s, measurements $((T_END - T_BUILT)) s. Latencies: wrk --latency percentiles; propagation: POST sent → first 401."
  echo "Server CPU per request: user+system time of the server process (and of redis-server in redis mode) over the measured run / requests."
  if ((MAX_BUSY > 15)); then
    echo "(*N%): other processes were using N % of the CPUs just before that measurement (after waiting up to ${BENCH_QUIET_WAIT:-180} s in all); those numbers are low."
  fi
} | tee "$OUT/table.txt"
