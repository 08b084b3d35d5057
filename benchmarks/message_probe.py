"""One-message TCP transfers, timed like a frame's comm: the helper run inside lab namespaces.

    server ADDR PORT             accept one connection; for each message (4-byte length + body)
                                 reply with 18 bytes (the size of a Result)
    client ADDR PORT SIZE COUNT GAP_S
                                 send COUNT messages of SIZE bytes on ONE connection, GAP_S apart
                                 (idle gaps: slow-start restart acts as on real frames), print the
                                 round-trip time of each as JSON (seconds)

Kept standalone (standard library only) so it runs in any namespace or on any host.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

REPLY = bytes(18)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(1 << 16, n - len(buf)))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def server(addr: str, port: int) -> None:
    with socket.create_server((addr, port)) as listener:
        listener.settimeout(60)
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            try:
                while True:
                    (size,) = struct.unpack("!I", _recv_exact(conn, 4))
                    _recv_exact(conn, size)
                    conn.sendall(REPLY)
            except EOFError:
                pass


def client(addr: str, port: int, size: int, count: int, gap: float) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            sock = socket.create_connection((addr, port), timeout=30)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message = struct.pack("!I", size) + bytes(size)
    times = []
    with sock:
        for _ in range(count):
            time.sleep(gap)
            t0 = time.perf_counter_ns()
            sock.sendall(message)
            _recv_exact(sock, len(REPLY))
            times.append((time.perf_counter_ns() - t0) / 1e9)
    print(json.dumps(times))


USAGE = {"server": ("ADDR", "PORT"), "client": ("ADDR", "PORT", "SIZE", "COUNT", "GAP_S")}


def main(argv: list[str]) -> int:
    mode, args = (argv[0], argv[1:]) if argv else ("", [])
    if mode not in USAGE or len(args) != len(USAGE[mode]):
        print(__doc__, file=sys.stderr)
        return 0 if mode in ("-h", "--help") else 2
    try:
        if mode == "server":
            server(args[0], int(args[1]))
        else:
            client(args[0], int(args[1]), int(args[2]), int(args[3]), float(args[4]))
    except ValueError as exc:
        print(f"message_probe {mode}: {' '.join(USAGE[mode])}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
