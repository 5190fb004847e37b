"""A small HTTP forward proxy for demos, tests and benchmarks, leaving from an address of its own.

Run: `python scripts/demo_proxy.py --port P [--source 127.0.0.2]`; it prints `ready
http://HOST:PORT` once it listens. Each request (absolute-form, as clients send to a proxy)
is forwarded from the `--source` address, so a site can tell — and block — each proxy by
its client address, as real sites tell proxies apart. Plain http only (no CONNECT). `GET
/__stats` (origin-form, asked of the proxy itself) answers how many requests it forwarded.
`--fail` makes it answer 502 to everything, like a dead upstream.
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

from demo_site import serve_forever  # scripts/ is on the path when a script runs

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "content-length",
    "content-encoding",
    "host",
}


class ForwardProxy:
    """Forwards absolute-form requests from one source address and counts them."""

    def __init__(self, source: str, fail: bool) -> None:
        self.source = source
        self.fail = fail
        self.forwarded = 0
        self.session: aiohttp.ClientSession | None = None

    async def start(self, _app: web.Application) -> None:
        connector = aiohttp.TCPConnector(local_addr=(self.source, 0), limit=0)
        self.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=30)
        )

    async def stop(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not request.raw_path.startswith(("http://", "https://")):  # asked of the proxy itself
            if request.path == "/__stats":
                return web.json_response({"forwarded": self.forwarded, "source": self.source})
            return web.Response(status=400, text="a proxy needs an absolute URL")
        if self.fail:
            return web.Response(status=502, text="Bad Gateway (proxy told to fail)")
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            async with self.session.request(
                request.method, request.url, headers=headers, data=await request.read(), allow_redirects=False
            ) as upstream:
                body = await upstream.read()
                self.forwarded += 1
                out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                return web.Response(status=upstream.status, body=body, headers=out)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return web.Response(status=502, text=f"Bad Gateway: {type(exc).__name__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--source", default="127.0.0.1", help="the address requests leave from")
    parser.add_argument("--fail", action="store_true", help="answer 502 to everything")
    args = parser.parse_args()
    proxy = ForwardProxy(args.source, args.fail)
    app = web.Application()
    app.on_startup.append(proxy.start)
    app.on_cleanup.append(proxy.stop)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    serve_forever(app, args.host, args.port)


if __name__ == "__main__":
    main()
