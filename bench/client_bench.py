"""Client latency and throughput, side by side in one run, on loopback.

    .venv/bin/python bench/client_bench.py [--requests 192] [--latency-requests 60] [--json out.json]

The reference router runs in its own process (``nomyo-audit serve --plain-endpoint``,
built-in echo model). Against it, in this process, one after another:

* (a) nomyo-audit's ``SecureChatCompletion`` with ``protocol="2"`` (HPKE, X-Wing when ML-KEM is here);
* (b) the same with ``protocol="1.0"`` (RSA-4096, the NOMYO protocol);
* (c) nomyo 0.2.9's ``SecureChatCompletion`` (from NOMYO_REFERENCE_PATH or .cache/nomyo-0.2.9);
* (d) a plain, unencrypted httpx POST of the same JSON to ``/v1/chat/completions``
  on the same router (pooled client): the floor without any cryptography.

For each, the router process's CPU time (user + system, from /proc) per request over the
throughput runs.

Then the crypto floor of one completion, both sides: RSA-4096 OAEP encrypt + decrypt
and AES-256-GCM over the request, and the same for the response.

``--floor-only`` prints just the side-by-side crypto floor per completion (no router, no HTTP):
protocol 1.0 (RSA-4096 + AES-256-GCM both ways) against protocol 2 with X-Wing and with
DHKEM(X25519) (seal_request, open_request, seal_response, open_response), each split into the
client's and the router's share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
MESSAGES = [
    {"role": "user", "content": "Summarise the attached quarterly incident report in three bullet points."}
]
PAYLOAD = {"model": "echo", "messages": MESSAGES, "temperature": 0.2}


def start_router() -> tuple[subprocess.Popen[bytes], str]:
    from nomyo_audit.router._server import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nomyo_audit.cli._main",
            "serve",
            "--port",
            str(port),
            "--plain-endpoint",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/pki/public_key", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("router did not start")


def load_nomyo() -> Any:
    path = os.environ.get("NOMYO_REFERENCE_PATH") or str(REPO / ".cache" / "nomyo-0.2.9")
    sys.path.insert(0, path)
    import nomyo

    sys.path.remove(path)
    return nomyo


Call = Callable[[], Awaitable[Any]]


async def latency(call: Call, n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {"p50_ms": statistics.median(samples), "p95_ms": samples[int(0.95 * (len(samples) - 1))]}


async def throughput(call: Call, total: int, concurrency: int) -> float:
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with semaphore:
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    return total / (time.perf_counter() - start)


def crypto_floor(n: int = 40) -> float:
    """Milliseconds of cryptography in one completion, both sides, sequentially."""
    from nomyo_audit.client._keys import generate_key_pair
    from nomyo_audit.wire import decrypt_package, encrypt_package, parse_package

    client, router = generate_key_pair(), generate_key_pair()
    request = json.dumps(PAYLOAD).encode()
    response = json.dumps({"choices": [{"message": {"content": "x" * 200}}], "_metadata": {}}).encode()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        decrypt_package(
            parse_package(encrypt_package(request, router.private_key.public_key())), router.private_key
        )
        decrypt_package(
            parse_package(encrypt_package(response, client.private_key.public_key())), client.private_key
        )
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


V1_FLOOR = "v1 RSA-4096 + AES-256-GCM"


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def crypto_floors(n: int = 200) -> dict[str, dict[str, float]]:
    """Per completion, both sides, milliseconds (medians): v1 RSA-4096 against v2's two suites.

    Each entry: ``client_ms`` (seal the request, open the reply), ``router_ms`` (open the request,
    seal the reply) and ``total_ms``. Payloads are the bench's request and a 200-character reply.
    """
    from nomyo_audit._protocol2 import (
        DHKEM_X25519,
        XWING,
        RouterKeys,
        mlkem_available,
        open_request,
        open_response,
        seal_request,
        seal_response,
    )
    from nomyo_audit.client._keys import generate_key_pair
    from nomyo_audit.wire import decrypt_package, encrypt_package, parse_package

    request = json.dumps(PAYLOAD).encode()
    response = json.dumps({"choices": [{"message": {"content": "x" * 200}}], "_metadata": {}}).encode()
    floors: dict[str, dict[str, float]] = {}

    client, router = generate_key_pair(), generate_key_pair()
    client_side, router_side = [], []
    for _ in range(max(n // 5, 20)):  # RSA-4096 is slow: fewer rounds, same median
        t0 = time.perf_counter()
        sealed = encrypt_package(request, router.private_key.public_key())
        t1 = time.perf_counter()
        decrypt_package(parse_package(sealed), router.private_key)
        reply = encrypt_package(response, client.private_key.public_key())
        t2 = time.perf_counter()
        decrypt_package(parse_package(reply), client.private_key)
        t3 = time.perf_counter()
        client_side.append((t1 - t0) + (t3 - t2))
        router_side.append(t2 - t1)
    floors[V1_FLOOR] = {"client_ms": _median_ms(client_side), "router_ms": _median_ms(router_side)}

    suites = [("v2 X-Wing (ML-KEM-768 + X25519)", XWING)] if mlkem_available() else []
    suites.append(("v2 DHKEM(X25519)", DHKEM_X25519))
    keys = RouterKeys.generate(3600, now=int(time.time()))
    for name, suite in suites:
        client_side, router_side = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            body, context = seal_request(
                keys.config, request, payload_id="bench", security_tier="standard", model="echo", suite=suite
            )
            t1 = time.perf_counter()
            reply = seal_response(open_request(keys, body), response)
            t2 = time.perf_counter()
            open_response(context, reply)
            t3 = time.perf_counter()
            client_side.append((t1 - t0) + (t3 - t2))
            router_side.append(t2 - t1)
        floors[name] = {"client_ms": _median_ms(client_side), "router_ms": _median_ms(router_side)}
    for figures in floors.values():
        figures["total_ms"] = figures["client_ms"] + figures["router_ms"]
    return floors


def print_floors(floors: dict[str, dict[str, float]]) -> None:
    v1 = floors[V1_FLOOR]["total_ms"]
    print("| protocol | client ms | router ms | total ms | vs v1 |")
    print("|---|---:|---:|---:|---:|")
    for name, f in floors.items():
        cells = f"{f['client_ms']:.3f} | {f['router_ms']:.3f} | {f['total_ms']:.3f}"
        print(f"| {name} | {cells} | {v1 / f['total_ms']:.1f}x |")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc; fields 14 and 15 of stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


V2_CLIENT, V1_CLIENT = "nomyo-audit protocol 2", "nomyo-audit protocol 1.0"


async def measure(url: str, total: int, latency_n: int, router_pid: int) -> dict[str, Any]:
    from nomyo_audit import SecureChatCompletion

    nomyo = load_nomyo()
    ours_v2 = SecureChatCompletion(url, allow_http=True, protocol="2")
    ours = SecureChatCompletion(url, allow_http=True, protocol="1.0")
    theirs = nomyo.SecureChatCompletion(url, allow_http=True)
    plain = httpx.AsyncClient(limits=httpx.Limits(max_connections=100, max_keepalive_connections=32))

    async def call_ours_v2() -> Any:
        return await ours_v2.create("echo", MESSAGES, temperature=0.2)

    async def call_ours() -> Any:
        return await ours.create("echo", MESSAGES, temperature=0.2)

    async def call_nomyo() -> Any:
        return await theirs.create(model="echo", messages=MESSAGES, temperature=0.2)

    async def call_plain() -> Any:
        response = await plain.post(url + "/v1/chat/completions", json=PAYLOAD)
        response.raise_for_status()
        return response.json()

    clients = {
        V2_CLIENT: call_ours_v2,
        V1_CLIENT: call_ours,
        "nomyo 0.2.9": call_nomyo,
        "plain httpx (no crypto)": call_plain,
    }
    results: dict[str, Any] = {}
    for name, call in clients.items():
        for _ in range(3):  # warm up: keys generated, connections opened
            await call()
        results[name] = await latency(call, latency_n)
        cpu_before = cpu_seconds(router_pid)
        for concurrency in (8, 32):
            results[name][f"rps_{concurrency}"] = await throughput(call, total, concurrency)
        results[name]["router_cpu_ms"] = (cpu_seconds(router_pid) - cpu_before) * 1000 / (2 * total)
        print(f"  measured {name}", file=sys.stderr)
    await ours.aclose()
    await ours_v2.aclose()
    await plain.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=192, help="requests per throughput run")
    parser.add_argument("--latency-requests", type=int, default=60)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--floor-only", action="store_true", help="only the v1/v2 crypto floors")
    args = parser.parse_args()
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.platform()}"
    )
    if args.floor_only:
        floors = crypto_floors()
        print(f"machine: {machine}\ncrypto floor per completion, both sides (medians):\n")
        print_floors(floors)
        if args.json:
            args.json.write_text(json.dumps({"machine": machine, "crypto_floors": floors}, indent=2))
        return
    logging.disable(logging.WARNING)  # nomyo logs a warning per request over HTTP
    warnings.simplefilter("ignore")

    floor = crypto_floor()
    floors = crypto_floors()
    proc, url = start_router()
    try:
        results = asyncio.run(measure(url, args.requests, args.latency_requests, proc.pid))
    finally:
        proc.terminate()
        proc.wait()

    ours, ref, plain = results[V1_CLIENT], results["nomyo 0.2.9"], results["plain httpx (no crypto)"]
    v2 = results[V2_CLIENT]
    added = ours["p50_ms"] - plain["p50_ms"]
    v2_added = v2["p50_ms"] - plain["p50_ms"]
    v2_floor_name = next(name for name in floors if name.startswith("v2"))  # the suite the client uses
    v2_floor = floors[v2_floor_name]["total_ms"]
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.platform()}",
        "crypto_floor_ms": floor,
        "added_latency_ms": added,
        "added_latency_over_floor": added / floor,
        "throughput_vs_nomyo_32": ours["rps_32"] / ref["rps_32"],
        "throughput_vs_nomyo_8": ours["rps_8"] / ref["rps_8"],
        "v2_floor": v2_floor_name,
        "v2_crypto_floor_ms": v2_floor,
        "v2_added_latency_ms": v2_added,
        "v2_added_latency_over_floor": v2_added / v2_floor,
        "v2_throughput_vs_v1_32": v2["rps_32"] / ours["rps_32"],
        "v2_throughput_vs_nomyo_32": v2["rps_32"] / ref["rps_32"],
        "results": results,
        "crypto_floors": floors,
    }
    print(f"machine: {summary['machine']}")
    print(f"crypto floor of one completion (both sides): {floor:.2f} ms\n")
    print("| client | p50 ms | p95 ms | req/s at 8 | req/s at 32 | router CPU ms/request |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        cells = f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['rps_8']:.1f} | {r['rps_32']:.1f}"
        print(f"| {name} | {cells} | {r['router_cpu_ms']:.2f} |")
    print(
        f"\nprotocol 2 added latency over plain HTTP: {v2_added:.2f} ms = "
        f"{v2_added / v2_floor:.2f}x its crypto floor ({v2_floor_name}, {v2_floor:.3f} ms; target <= 1.5x)"
    )
    print(
        f"protocol 2 throughput at 32-way: {summary['v2_throughput_vs_v1_32']:.1f}x our protocol 1.0 "
        f"(target >= 3x), {summary['v2_throughput_vs_nomyo_32']:.1f}x nomyo 0.2.9 (target >= 15x)"
    )
    print(
        f"protocol 1.0 added latency over plain HTTP: {added:.2f} ms "
        f"= {added / floor:.2f}x the crypto floor (target <= 1.5x)"
    )
    print(
        f"throughput vs nomyo 0.2.9 at 32-way: {summary['throughput_vs_nomyo_32']:.1f}x (target >= 5x); "
        f"at 8-way: {summary['throughput_vs_nomyo_8']:.1f}x"
    )
    print("\ncrypto floor per completion, both sides, protocol 1.0 against 2 (medians):\n")
    print_floors(floors)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
