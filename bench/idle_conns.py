#!/usr/bin/env python3
"""Idle keep-alive memory probe for bench/compare.sh.

Opens COUNT keep-alive connections to HOST:PORT, sends one request on each and reads its
answer (each must be 2xx), then holds them all open and prints how much the resident
memory (VmRSS) of the given process ids grew, in bytes, before closing them:

    idle_conns.py HOST PORT PATH COUNT HEADERS_FILE PID [PID ...]

HEADERS_FILE holds extra request header lines ("Name: value", one a line; may be empty).
IDLE_SETTLE_SECS (default 1) is how long the connections are held before measuring.
Output (stdout, one line): "<rss_before> <rss_after> <growth_per_connection>".
"""
import asyncio
import os
import resource
import sys
import time


def rss(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
    return total


async def one(host, port, request, sem, conns):
    async with sem:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if not status.startswith(b"2"):
            raise RuntimeError(f"answer {status.decode()} on an idle-probe request")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"connection" and b"close" in value.lower():
                raise RuntimeError("the server closed a keep-alive connection")
        if length:
            await reader.readexactly(length)
        conns.append(writer)


async def main():
    host, port, path, count, headers_file = sys.argv[1:6]
    pids = [int(p) for p in sys.argv[6:]]
    count = int(count)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if count + 64 > hard:
        sys.exit(f"idle_conns: {count} connections need a higher open-file limit (hard limit {hard})")
    extra = open(headers_file).read().strip()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        + (extra.replace("\n", "\r\n") + "\r\n" if extra else "")
        + "\r\n"
    ).encode()

    before = rss(pids)
    conns = []
    sem = asyncio.Semaphore(256)
    tasks = [one(host, port, request, sem, conns) for _ in range(count)]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    # Let the server settle (buffers shrink after the answer is written; idle
    # connections park). IDLE_SETTLE_SECS overrides the 1 s.
    await asyncio.sleep(float(os.environ.get("IDLE_SETTLE_SECS", "1.0")))
    after = rss(pids)
    print(before, after, (after - before) / count, flush=True)
    for w in conns:
        w.close()
    await asyncio.sleep(0.5)


if __name__ == "__main__":
    t0 = time.time()
    try:
        asyncio.run(main())
    except Exception as e:  # noqa: BLE001 - report any failure as one line
        sys.exit(f"idle_conns: {type(e).__name__}: {e}")
