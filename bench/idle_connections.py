#!/usr/bin/env python3
"""Idle-connection cost of a revokd API process.

    python3 bench/idle_connections.py HOST:PORT PID N

Opens N connections to HOST:PORT, sends one `GET /healthz` on each and reads
the answer (so each is a kept-alive connection with its buffers in use, as a
gateway's pool holds them), then holds them idle and prints the server's
VmRSS and open file descriptors before and with them, and the cost per
connection: one `idle key=value ...` line for run.sh, then one for people.
Needs `ulimit -n` above N (run.sh raises it).
"""

import os
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def healthz(sock):
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: revokd\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("connection closed before an answer")
        got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(4096)
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"unexpected answer: {head[:40]!r}")


def main():
    addr, pid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    host, port = addr.rsplit(":", 1)
    time.sleep(1)
    rss0, fds0 = rss_kib(pid), fds(pid)
    held = []
    start = time.monotonic()
    for _ in range(n):
        sock = socket.create_connection((host, int(port)), timeout=10)
        healthz(sock)
        held.append(sock)
    opened = time.monotonic() - start
    time.sleep(2)
    rss1, fds1 = rss_kib(pid), fds(pid)
    per_conn = (rss1 - rss0) * 1024 / n
    print(f"idle n={n} rss0_kb={rss0} rss1_kb={rss1} fds0={fds0} fds1={fds1} open_s={opened:.1f}")
    print(
        f"{n} idle connections (opened in {opened:.1f} s): "
        f"VmRSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB "
        f"(+{per_conn / 1024:.1f} KiB each), fds {fds0} -> {fds1}"
    )
    for sock in held:
        sock.close()


if __name__ == "__main__":
    main()
