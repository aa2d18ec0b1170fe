"""``python -m bench.http_clients [--calls N]``: CPU per POST of the HTTP clients the project has, to a
loopback uvicorn app answering like WeCom's message/send (a JSON body in, ``{"errcode": 0}`` out).

Why the WeCom reply pump sends with aiohttp rather than httpx (handlers/wecom/api.py): the pump's
calls share the web process's CPU with the callbacks it answers. Prints, for each client, the
CPU time and wall time per call of this process (the server runs in another), in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import socket
import time


def _serve(sock: socket.socket) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def send(request):
        await request.body()
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    app = Starlette(routes=[Route("/cgi-bin/message/send", send, methods=["POST"])])
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(url: str, calls: int) -> list[tuple[str, float, float]]:
    import aiohttp
    import httpx

    body = json.dumps({"touser": "u1", "msgtype": "text", "text": {"content": "请选择住户" * 20}},
                      ensure_ascii=False).encode()
    params, headers = {"access_token": "T"}, {"Content-Type": "application/json"}
    results = []

    async def timed(name, one):
        for _ in range(50):  # warm: connections open, code paths loaded
            await one()
        cpu, wall = _cpu(), time.perf_counter()
        for _ in range(calls):
            await one()
        results.append((name, (_cpu() - cpu) / calls * 1000, (time.perf_counter() - wall) / calls * 1000))

    async with httpx.AsyncClient() as client:
        async def httpx_async():
            (await client.post(url, params=params, content=body, headers=headers)).json()
        await timed("httpx.AsyncClient", httpx_async)
    with httpx.Client() as client:
        async def httpx_sync():
            client.post(url, params=params, content=body, headers=headers).json()
        await timed("httpx.Client", httpx_sync)
    async with aiohttp.ClientSession() as session:
        async def aiohttp_post():
            async with session.post(url, params=params, data=body, headers=headers) as response:
                json.loads(await response.read())
        await timed("aiohttp.ClientSession", aiohttp_post)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_clients", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed POSTs per client (2000)")
    args = parser.parse_args(argv)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(sock,), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/cgi-bin/message/send"
    try:
        import httpx

        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(url, content=b"{}")
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        results = asyncio.run(_measure(url, args.calls))
    finally:
        server.terminate()
    floor = min(cpu for _, cpu, _ in results)
    print(f"{args.calls} POSTs each to a loopback uvicorn app")
    print(f"{'client':24} {'CPU ms/call':>12} {'wall ms/call':>13} {'CPU / cheapest':>15}")
    for name, cpu, wall in results:
        print(f"{name:24} {cpu:12.3f} {wall:13.3f} {cpu / floor:15.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
