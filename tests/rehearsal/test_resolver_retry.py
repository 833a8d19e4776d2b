"""The load generator's stub resolver retransmits an unanswered query once, as glibc's resolver does (attempts:2):
a UDP answer lost to a busy moment is not a failed request; a server that never answers still fails the lookup."""

from __future__ import annotations

import socket
import threading

import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from drills.rehearsal.loadgen import CachingResolver


def _server(drop_first: int) -> tuple[socket.socket, list[int]]:
    """A UDP DNS server on loopback that ignores its first `drop_first` queries, then answers 127.0.10.7 (TTL 30)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    seen = [0]

    def serve() -> None:
        while True:
            try:
                data, addr = sock.recvfrom(4096)
            except OSError:
                return
            seen[0] += 1
            if seen[0] <= drop_first:
                continue
            q = DNSRecord.parse(data)
            a = q.reply()
            a.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("127.0.10.7"), ttl=30))
            sock.sendto(a.pack(), addr)

    threading.Thread(target=serve, daemon=True).start()
    return sock, seen


def test_one_lost_answer_is_retried_and_a_dead_server_still_fails():
    sock, seen = _server(drop_first=1)
    try:
        r = CachingResolver(sock.getsockname(), timeout=0.2)
        assert r.resolve("ranker.shop.example.com") == ("127.0.10.7", False)
        assert seen[0] == 2 and r.lookups == 1
    finally:
        sock.close()
    dead, seen = _server(drop_first=10)
    try:
        with pytest.raises(TimeoutError, match="no DNS answer"):
            CachingResolver(dead.getsockname(), timeout=0.1).resolve("ranker.shop.example.com")
        assert seen[0] == 2  # two attempts, no more
    finally:
        dead.close()
