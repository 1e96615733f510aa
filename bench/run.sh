#!/usr/bin/env bash
# bench/run.sh — revokd's benchmark suite, one command, one table.
#
#   bash bench/run.sh
#
# Orchestration only: it builds the binaries (`--features bench`), starts
# the servers, runs the load and collects the raw results in
# target/bench/<timestamp>/ — wrk runs as JSON through `bench/report.lua`,
# the bench binaries' result lines, criterion's output, the `KEY=VALUE`
# facts of `results.env` — then `examples/bench_report` turns them into the
# table and the target checks. What each step measures, the prerequisites
# (checked, never installed), the knobs and the latest figures:
# bench/README.md.

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
# BENCH_ONLY=propagation: steps 2 and 4 only (the data, then propagation
# against its API and worker), the two result lines instead of the table.
ONLY=${BENCH_ONLY:-}
[[ -z $ONLY || $ONLY == propagation ]] || { echo "BENCH_ONLY: only 'propagation' is known" >&2; exit 2; }
# BENCH_PROPAGATION_STAGES=1: step 4's API and worker log each revocation's
# stages (target revokd::propagation) and bench/propagation_stages.py says
# where each probe's time went.
STAGES=${BENCH_PROPAGATION_STAGES:-0}
STAGES_LOG=(RUST_LOG="warn,revokd::propagation=debug")

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
# BENCH_BIN_DIR: where the built binaries are (another build's, to compare;
# with BENCH_SKIP_BUILD=1).
BIN_DIR=${BENCH_BIN_DIR:-$ROOT/target/release}
REVOKD="$BIN_DIR/revokd"
EXAMPLES="$BIN_DIR/examples"

export REDIS_URL RUST_LOG=warn
HS256_ENV=(JWT_SECRET="$SECRET")
ES256_ENV=(JWT_ALGORITHM=ES256 JWT_PUBLIC_KEY_FILE="$KEYS/ec256_public.pem"
  JWT_PRIVATE_KEY_FILE="$KEYS/ec256_private.pem")
# What every revokd command of this run shares.
COMMON_ENV=(DATABASE_URL="$DB_URL" REVOKD_KEY_PREFIX="$PREFIX"
  REVOKD_API_KEYS="bench:$API_KEY")

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
record() { printf '%s=%s\n' "$1" "$2" >>"$RESULTS"; }

# Prerequisites are checked, never installed: that is the operator's (or
# .ci's) job. All that is missing is named at once.
missing=()
for tool in cargo wrk curl redis-cli psql python3 getconf; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
((${#missing[@]} == 0)) || die "missing: ${missing[*]} — install them first (on Debian: apt-get install wrk curl redis-tools postgresql-client python3; cargo from rustup)"

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

redis ping >/dev/null || die "Redis at $REDIS_URL does not answer"
pg "$PG_SERVER/postgres" -c 'select 1' >/dev/null || die "Postgres at $PG_SERVER does not answer"

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
  return 0
}

# ---------------------------------------------------------------- wrk

# wrk_run URL TOKEN DURATION OUTFILE [REPORT] — wrk's text in OUTFILE; with
# REPORT, bench/report.lua writes the run as JSON there.
wrk_run() {
  local script=()
  [[ -n ${5:-} ]] && script=(-s "$ROOT/bench/report.lua")
  WRK_REPORT=${5:-} wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$3" --latency \
    "${script[@]+"${script[@]}"}" -H "Authorization: Bearer $2" "$1" >"$4"
}

# log_wrk FILE KEY — one progress line from wrk's own text.
log_wrk() {
  log "  $2: $(awk '/^Requests\/sec:/ { rps = $2 } $1 == "99%" { p99 = $2 } END { printf "%.0f req/s, p99 %s", rps, p99 }' "$1")"
}

CLK_TCK=$(getconf CLK_TCK)
# cpu_ticks PID — user + system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# The local redis-server's pid, to charge its CPU to redis mode; empty when
# Redis is not a process of this machine.
REDIS_PID=$(redis info server | tr -d '\r' | awk -F: '$1 == "process_id" { print $2 }')
[[ -n $REDIS_PID && $(cat "/proc/$REDIS_PID/comm" 2>/dev/null) == redis-server* ]] || REDIS_PID=
redis_ticks() { if [[ -n $REDIS_PID ]]; then cpu_ticks "$REDIS_PID"; else echo 0; fi; }
record clk_tck "$CLK_TCK"
record redis_local "$([[ -n $REDIS_PID ]] && echo 1 || echo 0)"

# measure_auth KEY PORT TOKEN PID — warm-up, then the measured run; also
# records the CPU ticks the server (PID) and redis-server spent in it.
measure_auth() {
  local key=$1 url="http://127.0.0.1:$2/v1/auth" token=$3 pid=$4 code s0 r0
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$url")
  [[ $code == 200 ]] || die "$key: GET /v1/auth answered $code, expected 200"
  quiet "$key"
  wrk_run "$url" "$token" "$WRK_WARMUP" "$OUT/$key.warmup.wrk"
  s0=$(cpu_ticks "$pid") r0=$(redis_ticks)
  wrk_run "$url" "$token" "$WRK_DURATION" "$OUT/$key.wrk" "$OUT/$key.wrk.json"
  record "${key}_cpu_ticks" "$(($(cpu_ticks "$pid") - s0))"
  record "${key}_redis_cpu_ticks" "$(($(redis_ticks) - r0))"
  log_wrk "$OUT/$key.wrk" "$key"
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

T0=$SECONDS
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "build: cargo build --release --features bench --bin revokd --examples; cargo bench --features bench --bench verify --no-run"
  cargo build --release --features bench --bin revokd --examples
  cargo bench --features bench --bench verify --no-run >/dev/null 2>"$OUT/bench-build.log" ||
    { cat "$OUT/bench-build.log" >&2; die "building benches/verify.rs"; }
fi
NEEDED=("$REVOKD" "$EXAMPLES/bench_bare" "$EXAMPLES/bench_propagation" "$EXAMPLES/bench_worker" "$EXAMPLES/bench_report")
[[ $ONLY == propagation ]] && NEEDED=("$REVOKD" "$EXAMPLES/bench_propagation")
for bin in "${NEEDED[@]}"; do
  [[ -x $bin ]] || die "$bin is missing (build first, with --features bench)"
done
T_BUILT=$SECONDS

log "prefix $PREFIX, database $DB, outputs ${OUT#"$ROOT"/}"
env "${COMMON_ENV[@]}" "${HS256_ENV[@]}" "$REVOKD" migrate >/dev/null
env "${COMMON_ENV[@]}" "${HS256_ENV[@]}" "$REVOKD" rehydrate >/dev/null # sets the marker

# ---------------------------------------------------------------- 1. RSS, empty

if [[ -z $ONLY ]]; then
  log "1. API RSS with an empty deny-list"
  replica_rss rss0
fi

# ---------------------------------------------------------------- 2. data

log "2. $ENTRIES revoked tokens into Postgres and Redis"
load_tokens "$ENTRIES"
HS256_TOKEN=$(env "${HS256_ENV[@]}" "$REVOKD" mint --sub bench --ttl 2h)
ES256_TOKEN=$(env "${ES256_ENV[@]}" "$REVOKD" mint --sub bench --ttl 2h)

# ---------------------------------------------------------------- 3. wrk

if [[ -z $ONLY ]]; then
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
fi

for alg in hs256 es256; do
  if [[ $alg == hs256 ]]; then alg_env=("${HS256_ENV[@]}") token=$HS256_TOKEN; else alg_env=("${ES256_ENV[@]}") token=$ES256_TOKEN; fi
  for mode in redis replica nocache; do
    [[ $ONLY == propagation && ($mode != replica || $alg != hs256) ]] && continue
    port=$(free_port)
    # nocache: read mode replica with the verify cache off, so every request
    # verifies its token in full (the cost of a token seen for the first time).
    read_mode=${mode/nocache/replica}
    mode_env=()
    [[ $mode == nocache ]] && mode_env=(REVOKD_VERIFY_CACHE_SIZE=0)
    [[ $STAGES == 1 && $mode == replica && $alg == hs256 ]] && mode_env+=("${STAGES_LOG[@]}")
    start_revokd "${mode}_${alg}" "$read_mode" api "$port" "${alg_env[@]}" "${mode_env[@]+"${mode_env[@]}"}"
    pid=$SERVER_PID
    if [[ $read_mode == replica ]]; then wait_ready "$port" "$pid" current; else wait_ready "$port" "$pid" off; fi
    if [[ -z $ONLY ]]; then
      rss_before=$(vm_kb "$pid" VmRSS)
      measure_auth "${mode}_${alg}" "$port" "$token" "$pid"
      record "${mode}_${alg}_rss_growth_kb" "$(($(vm_kb "$pid" VmRSS) - rss_before))"
    fi
    if [[ $mode == replica && $alg == hs256 ]]; then
      # ---------------------------------------------------- 4. propagation
      log "4. propagation: POST /v1/revocations → first 401 on GET /v1/auth"
      worker_env=()
      [[ $STAGES == 1 ]] && worker_env=("${STAGES_LOG[@]}")
      start_revokd worker replica worker "$(free_port)" "${HS256_ENV[@]}" "${worker_env[@]+"${worker_env[@]}"}"
      worker_pid=$SERVER_PID
      prop() { # LABEL
        env "${HS256_ENV[@]}" BENCH_URL="http://127.0.0.1:$port" BENCH_API_KEY="$API_KEY" \
          BENCH_N="$PROPAGATION_N" BENCH_LABEL="$1" BENCH_SAMPLES="$OUT/propagation_$1.tsv" \
          "$EXAMPLES/bench_propagation" >"$OUT/propagation_$1.txt" 2>>"$OUT/propagation.log" ||
          { tail -20 "$OUT/propagation.log" >&2; die "bench_propagation ($1)"; }
        local line
        line=$(grep '^propagation ' "$OUT/propagation_$1.txt") || die "propagation $1: no result"
        log "  $line"
        if [[ $STAGES == 1 ]]; then
          python3 "$ROOT/bench/propagation_stages.py" "$OUT/propagation_$1.tsv" \
            "$OUT/${mode}_${alg}.log" "$OUT/worker.log" | tee "$OUT/stages_$1.txt" >&2
        fi
      }
      quiet prop_idle
      prop idle
      # wrk itself (not a subshell), so that SIGINT reaches it: it then
      # stops and prints its statistics for the time it ran.
      WRK_REPORT="$OUT/prop_load_wrk.wrk.json" wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d600s \
        --latency -s "$ROOT/bench/report.lua" -H "Authorization: Bearer $token" \
        "http://127.0.0.1:$port/v1/auth" >"$OUT/propagation_load.wrk" &
      wrk_pid=$!
      PIDS+=("$wrk_pid")
      sleep 2
      prop load
      kill -INT "$wrk_pid"
      wait "$wrk_pid" || true
      forget_pid "$wrk_pid"
      log_wrk "$OUT/propagation_load.wrk" prop_load_wrk
      stop "$worker_pid"
    fi
    stop "$pid"
  done
done

if [[ $ONLY == propagation ]]; then
  cat "$OUT"/propagation_*.txt
  exit 0
fi

# ---------------------------------------------------------------- 5. worker

log "5. worker throughput: $WORKER_JOBS-job backlog"
quiet worker
env BENCH_DATABASE_URL="$PG_SERVER/postgres" BENCH_JOBS="$WORKER_JOBS" BENCH_STALL_SECS="$WORKER_STALL_SECS" \
  "$EXAMPLES/bench_worker" >"$OUT/worker.txt" 2>"$OUT/worker.log" ||
  { tail -20 "$OUT/worker.log" >&2; die "bench_worker"; }
line=$(grep '^worker ' "$OUT/worker.txt") || die "bench_worker: no result"
log "  $line"

# ---------------------------------------------------------------- 6. criterion

log "6. criterion: verify, verify+lookup, cached+lookup per algorithm family; replica lookup"
quiet criterion
cargo bench --features bench --bench verify -- --output-format bencher >"$OUT/criterion.txt" 2>"$OUT/criterion.log" ||
  { tail -20 "$OUT/criterion.log" >&2; die "cargo bench --bench verify"; }

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
grep -q '^idle ' "$OUT/idle.txt" || die "idle connections: no result"
log "  $(tail -1 "$OUT/idle.txt")"
stop "$pid"

T_END=$SECONDS

# ---------------------------------------------------------------- the table

record date "$(date -u '+%Y-%m-%d %H:%M UTC')"
record commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src jobs migrations Cargo.toml 2>/dev/null || echo ' + uncommitted changes')"
record machine "$(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
record wrk "wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION"
record entries "$ENTRIES"
record rss_entries "$RSS_ENTRIES"
record quiet_wait "${BENCH_QUIET_WAIT:-180}"
record build_s "$((T_BUILT - T0))"
record measure_s "$((T_END - T_BUILT))"
"$EXAMPLES/bench_report" "$OUT" | tee "$OUT/table.txt"
