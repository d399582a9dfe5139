"""The public DNI lease endpoint: requests per second on one core, next to a baseline.

    python bench/lease.py [--seconds 5] [--connections 64] [--numbers 200]

The server is the controller's HTTP stack (aiohttp, the panel's middleware and
security headers, the attribution service with its rate limiters, SQLite
behind it) in its own process pinned to CPU 0; the load comes from another
process pinned to CPU 1 over keep-alive loopback connections. Figures:

- baseline: GET /dni/v1/dni.js (a static answer through the same stack);
- lease: GET /dni/v1/lease with a known key, sub_id/click_id/utm values, a new
  visitor each time (the pool is soon exhausted, so most leases reuse the
  oldest: the slowest path, counting shortages);
- renew: GET /dni/v1/lease with the visitor's token (renewal).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

SERVER = r"""
import sys
from aiohttp import web
from ppcswitch.config import load_settings
from ppcswitch.app import create_app
settings = load_settings()
web.run_app(create_app(settings, telephony=False), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def seed(url: str, numbers: int) -> str:
    from ppcswitch.attribution import store
    from ppcswitch.storage import db, repo

    await db.upgrade(url)
    engine = db.make_engine(url)
    try:
        async with db.make_sessionmaker(engine)() as s, s.begin():
            await repo.create_campaign(s, "HVAC")
            await repo.create_publisher(s, "Acme", payout="10.00")
            pool = await store.create_pool(s, "bench", "HVAC", "Acme", 600)
            for i in range(numbers):
                await store.add_pool_number(s, "bench", f"+1800555{i:04d}")
            return pool.public_key
    finally:
        await engine.dispose()


async def load(base: str, paths, seconds: float, connections: int) -> tuple[int, int]:
    import aiohttp

    done = errors = 0
    stop = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def worker(w: int):
            nonlocal done, errors
            i = 0
            while time.monotonic() < stop:
                async with http.get(base + paths(w, i)) as r:
                    await r.read()
                    if r.status == 200:
                        done += 1
                    else:
                        errors += 1
                i += 1

        await asyncio.gather(*(worker(w) for w in range(connections)))
    return done, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--numbers", type=int, default=200)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="ppcswitch-bench-lease-")
    url = f"sqlite+aiosqlite:///{tmp}/bench.db"
    key = asyncio.run(seed(url, args.numbers))
    port = free_port()
    env = {**os.environ, "PPCSWITCH_DATABASE_URL": url, "PPCSWITCH_ATTRIBUTION_LEASE_RATE_PER_CLIENT": "1e9",
           "PPCSWITCH_ATTRIBUTION_LEASE_BURST_PER_CLIENT": "1e9", "PPCSWITCH_ATTRIBUTION_LEASE_RATE_PER_PUBLISHER": "1e9",
           "PPCSWITCH_ATTRIBUTION_LEASE_BURST_PER_PUBLISHER": "1e9"}
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = cpus[0], cpus[-1]
    server = subprocess.Popen(["taskset", "-c", str(server_cpu), sys.executable, "-c", SERVER, str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        os.sched_setaffinity(0, {client_cpu})
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("the server did not start", file=sys.stderr)
                    return 1
                time.sleep(0.1)
        time.sleep(0.5)  # the pool is loaded at start
        tokens: dict[int, str] = {}

        def lease_path(w, i):
            return f"/dni/v1/lease?key={key}&sub_id=fb-{w}-{i}&click_id=c{w}x{i}&utm_source=facebook"

        asyncio.run(load(base, lambda w, i: "/dni/v1/dni.js", 1.0, args.connections))  # warm-up
        print(f"lease endpoint, server on CPU {server_cpu}, client on CPU {client_cpu}, "
              f"{args.connections} connections, {args.seconds:.0f} s each, pool of {args.numbers} numbers")
        rows = []
        for name, paths in (("baseline (dni.js)", lambda w, i: "/dni/v1/dni.js"), ("lease (new visitor)", lease_path)):
            done, errors = asyncio.run(load(base, paths, args.seconds, args.connections))
            rows.append((name, done / args.seconds, errors))

        async def renewals():
            import aiohttp

            async with aiohttp.ClientSession() as http:
                for w in range(args.connections):
                    async with http.get(base + lease_path(w, 0)) as r:
                        tokens[w] = (await r.json())["token"]
            return await load(base, lambda w, i: f"/dni/v1/lease?key={key}&token={tokens[w]}", args.seconds,
                              args.connections)

        done, errors = asyncio.run(renewals())
        rows.append(("lease (renewal)", done / args.seconds, errors))
        for name, rate, errors in rows:
            print(f"  {name:22s} {rate:8.0f} requests/s  ({errors} non-200)")
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
