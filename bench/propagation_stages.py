#!/usr/bin/env python3
"""Where each propagation probe's time went.

    propagation_stages.py SAMPLES API_LOG WORKER_LOG

SAMPLES is what `bench_propagation` writes with `BENCH_SAMPLES` (job_id,
token_id, start_unix_us, post_us, revoked_us, polls; tab-separated). The logs
are those of the replica-mode API and the worker, run with
`RUST_LOG=warn,revokd::propagation=debug` (bench/run.sh does this with
`BENCH_PROPAGATION_STAGES=1`). Timestamps are the log lines' own (µs, one
machine, one clock). Stages, in ms from the previous one:

  received   POST sent → the API's write path has it (parsed, verified)
  recorded   → the revocation committed to Postgres (API)
  ahead      → written ahead into Redis by the API (at the same time as
               the push: either may come first)
  queued     → pushed to the queue and the wake-up published (API)
  woken      → the worker's listener got the wake-up (first one after `recorded`)
  picked     → the worker's handler started on the job
  denied     → the deny-list (and its stream event) written (worker)
  replica    → the API's follower applied the event (from the first write
               into Redis: `ahead` or `denied`, whichever came first)
  seen       → the probe's first 401

Prints each stage's p50 / p99 / max over all probes, then every probe slower
than 20 ms (or the slowest 1 %) stage by stage.
"""

import re
import sys
from datetime import datetime, timezone

LINE = re.compile(r"^(\S+Z)\s+DEBUG\s+revokd::propagation: (.*)$")
FIELD = re.compile(r'(\w+)="?([^" ]*)"?')
MESSAGES = {
    "received": "received",
    "recorded": "recorded",
    "written ahead": "ahead",
    "queued and wake published": "queued",
    "wake-up received": "woken",
    "picked up": "picked",
    "deny-list written": "denied",
    "replica applied": "replica",
}
STAGES = ["received", "recorded", "ahead", "queued", "woken", "picked", "denied", "replica", "seen"]


def unix_us(stamp):
    whole, _, frac = stamp.rstrip("Z").partition(".")
    t = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return int(t.timestamp()) * 1_000_000 + int((frac + "000000")[:6])


def read_log(path, by_id, wakes):
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line.strip())
            if not m:
                continue
            at, rest = unix_us(m.group(1)), m.group(2)
            for text, stage in MESSAGES.items():
                if rest.startswith(text):
                    fields = dict(FIELD.findall(rest[len(text):]))
                    if stage == "woken":
                        wakes.append(at)
                    else:
                        key = fields.get("job_id") or fields.get("token_id")
                        if key:
                            by_id.setdefault((stage, key), at)
                    break


def pct(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    rank = max(1, -(-len(values) * p // 100))
    return values[int(rank) - 1]


def main():
    samples_path, api_log, worker_log = sys.argv[1:4]
    by_id, wakes = {}, []
    read_log(api_log, by_id, wakes)
    read_log(worker_log, by_id, wakes)
    wakes.sort()
    probes = []
    with open(samples_path) as f:
        for line in f:
            job, token, start, post, revoked, _polls = line.rstrip("\n").split("\t")
            start = int(start)
            t = {
                "received": by_id.get(("received", job)),
                "recorded": by_id.get(("recorded", job)),
                "ahead": by_id.get(("ahead", job)),
                "queued": by_id.get(("queued", job)),
                "picked": by_id.get(("picked", job)),
                "denied": by_id.get(("denied", job)),
                "replica": by_id.get(("replica", token)),
                "seen": start + int(revoked),
            }
            after = t["recorded"]
            t["woken"] = next((w for w in wakes if after is not None and w >= after), None)
            stages, prev = {}, start
            for s in STAGES:
                at = t[s]
                if s == "replica":
                    # The follower reads whichever write reached Redis first:
                    # the API's write ahead or the worker's.
                    writes = [w for w in (t["ahead"], t["denied"]) if w is not None]
                    prev = min(writes) if writes else prev
                stages[s] = None if at is None or prev is None else (at - prev) / 1000
                prev = at if at is not None else prev
            probes.append((int(revoked) / 1000, job, stages))
    print(f"{len(probes)} probes; stage durations in ms (from the previous stage)")
    print(f"{'stage':<10}{'p50':>9}{'p99':>9}{'max':>9}  missing")
    for s in STAGES:
        vals = [p[2][s] for p in probes if p[2][s] is not None]
        missing = len(probes) - len(vals)
        print(f"{s:<10}{pct(vals, 50):>9.2f}{pct(vals, 99):>9.2f}{pct(vals, 100):>9.2f}  {missing}")
    probes.sort(key=lambda p: p[0], reverse=True)
    slow = [p for p in probes if p[0] > 20] or probes[: max(1, len(probes) // 100)]
    print(f"\nslow probes ({len(slow)}): total | " + " ".join(f"{s:>8}" for s in STAGES))
    for total, job, stages in slow[:40]:
        cells = " ".join(f"{'-' if stages[s] is None else format(stages[s], '.2f'):>8}" for s in STAGES)
        print(f"{total:8.2f} | {cells}  {job}")


if __name__ == "__main__":
    main()
