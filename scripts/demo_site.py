"""A local web site of product pages with deterministic fault modes, for demos, tests and
benchmarks. Run: `python scripts/demo_site.py [--host 127.0.0.1] [--port 8800] [--extra-port P]...`;
it prints `ready http://HOST:PORT` (the main port) once it listens on every port. Every port
serves the same site; to a crawler each HOST:PORT is a target of its own.

Paths (N is any integer; every answer depends only on the path, how many times it was asked
for, the client's address and the options):

    /product/N      a product page (title, price, tags; a photo and a reviews link, both relative URLs)
    /flaky/N        503 for the first `--flaky-failures` requests of that path, then the page
    /limited/N      the page, but 429 with Retry-After once a client exceeds --limited-rate/s
    /blocked/N      403 for clients in --block (all clients if --block is not given)
    /captcha/N      200 with a challenge page ("Are you a robot?")
    /challenge/N    200 with a Cloudflare-like challenge page and `cf-mitigated: challenge`
    /prose/N        the product page with an article about CAPTCHAs (not a challenge page)
    /drift/N        200 with a changed layout: no price
    /gone/N         404;  /removed/N  410;  /private/N  401
    /slow/N?ms=M    the page after M milliseconds (default 2000)
    /huge/N         a page of --huge-bytes bytes
    /loop/N         a redirect loop;  /moved/N  301 to /product/N
    /to-file/N      302 to file:///etc/passwd (a redirect to a scheme a crawler must refuse)
    /nested/N       a hostile page: 400,000 unclosed <div> tags (2 MB)
    /attributes/N   a hostile page: one tag with 180,000 attributes
    /site/N         the realistic site: page N of a shop where a few percent of pages have each
                    fault kind, decided by N alone (`fault_of`, `FAULT_SHARES`): most are
                    product pages; `gone` 404; `down` 503 always; `flaky` 503 on the first
                    request of that path on that port, then the page; `drift` the page without
                    its headline (h1.title); `limited` 429 with Retry-After (--site-retry-after
                    seconds) from its first request on that port until that time has passed,
                    then the page; `prose` the page of /prose/N (an article that mentions
                    challenge words: "CAPTCHA", "Are you a robot?")
    /__stats        JSON: requests per path, per client, per status, per host (HOST:PORT the
                    request came in on), per fault kind of /site/ pages (`by_fault`, and
                    `by_host_fault` per host), and per path family (/product, /switch...):
                    count, first and last time, the most in any 1-second window;
                    POST /__reset clears them

A host that is down (nothing listening) for demos and benchmarks: `port_with_nothing_listening()`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import socket
import time
from collections import Counter, defaultdict, deque

from aiohttp import web

PAGE = """<!doctype html>
<html><head><title>Product {n}</title></head>
<body>
<h1 class="title">Product {n}</h1>
<div class="details"><span class="price">${price}</span><span class="sku" data-sku="SKU-{n:06d}">SKU</span></div>
<ul class="tags"><li class="tag">tools</li><li class="tag">series-{series}</li></ul>
<a class="reviews" href="reviews/{n}"><img class="photo" src="/img/{n}.jpg" alt=""></a>
<p class="description">{text}</p>
</body></html>
"""
"""A product page. Its photo and reviews links are relative (the photo to the host, the reviews
to the page's path: `reviews/N` under /product/N is /product/reviews/N); they add no text."""

DRIFTED = """<!doctype html>
<html><head><title>Product {n}</title></head>
<body><h1 class="product-name">Product {n}</h1><div class="cost">{price}</div></body></html>
"""

CAPTCHA = """<!doctype html><html><body><h1>Are you a robot?</h1>
<p>Our systems have detected unusual traffic. Please solve the CAPTCHA.</p></body></html>"""

CHALLENGE = """<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8">
<meta name="robots" content="noindex,nofollow">
<style>*{box-sizing:border-box;margin:0;padding:0}html{line-height:1.15}</style>
<script>(function(){window._cf_chl_opt={cvId:'3',cZone:'127.0.0.1',cType:'managed',
cRay:'8c1f0e2d3a4b5c6d'};var a=document.createElement('script');a.src='/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1?ray=8c1f0e2d3a4b5c6d';
document.getElementsByTagName('head')[0].appendChild(a);}());</script></head>
<body><div class="main-wrapper" role="main"><div class="main-content">
<h1 class="zone-name-title h1">127.0.0.1</h1>
<h2 class="h2" id="challenge-running">Verifying you are human. This may take a few seconds.</h2>
<noscript><div class="h2"><span id="challenge-error-text">Enable JavaScript and cookies to continue</span></div></noscript>
<div id="turnstile-wrapper"><iframe src="https://challenges.cloudflare.com/cdn-cgi/challenge-platform/h/b/turnstile/if/ov2/av0/rcv/0/8c1f0e2d3a4b5c6d" title="Widget containing a Cloudflare security challenge"></iframe></div>
<div id="challenge-body-text" class="core-msg spacer">127.0.0.1 needs to review the security of your connection before proceeding.</div>
</div></div>
<div class="footer" role="contentinfo"><div class="footer-inner"><div class="clearfix diagnostic-wrapper">
<div class="ray-id">Ray ID: <code>8c1f0e2d3a4b5c6d</code></div></div>
<div class="text-center" id="footer-text">Performance &amp; security by Cloudflare</div></div></div>
</body></html>"""
"""A page shaped like Cloudflare's managed challenge (served here with 200 to reach the extractor)."""

PROSE = """<!doctype html>
<html><head><title>Product {n}: why you keep seeing CAPTCHAs</title></head>
<body>
<nav><a href="/">Home</a> <a href="/product/1">Catalogue</a> <a href="/about">About us</a></nav>
<h1 class="title">Product {n}</h1>
<div class="details"><span class="price">${price}</span><span class="sku" data-sku="SKU-{n:06d}">SKU</span></div>
<article class="description">
<p>Have you ever been asked "Are you a robot?" while shopping? Sites show a CAPTCHA when they
see unusual traffic from a network: many requests in a short time, or from addresses that
were used by scrapers before. The puzzle is meant to be easy for people and hard for
programs, which is why it asks you to pick the traffic lights or type a few warped letters.</p>
<p>Our product {n} is a router for small offices. It does not stop CAPTCHAs, but its guest
network keeps the office's own traffic apart, so one misbehaving laptop does not make the
whole office look like a robot. Setting it up takes five minutes: plug it in, open the
app, and follow the three steps. The app explains every setting in plain words.</p>
<p>Reviewers liked the quiet fan, the long warranty and the clear lights on the front. Some
wished for a fourth network port. If you run a shop yourself, you may want to read our
guide on how to verify you are human without annoying your customers: it covers invisible
checks, rate limits and when a CAPTCHA is the right answer after all.</p>
</article>
<footer>Shipping and returns. Privacy. Terms. Contact. Just a moment of your time: rate us.</footer>
</body></html>
"""
"""A product page whose article discusses challenge pages: the extraction keeps it."""


NESTED = b"<html><body>" + b"<div>" * 400_000
"""Markup whose parse time grows with the square of its depth (minutes for this one)."""
ATTRIBUTES = b"<html><body><p " + b" ".join(b"a%d" % i for i in range(180_000)) + b"></p></body></html>"
"""One tag whose parse time grows with the square of its attribute count."""


DRIFTED_HEADLINE = '<h1 class="title">'
"""The headline a `drift` page of the realistic site lacks (its h1 has another class)."""


def product(n: int) -> str:
    return PAGE.format(
        n=n, price=f"{(n * 37) % 1000 / 10 + 1:.2f}", series=n % 7, text=" ".join(["Sturdy and reliable."] * 8)
    )


FAULT_SHARES: dict[str, int] = {"gone": 20, "down": 10, "flaky": 20, "drift": 12, "limited": 20, "prose": 20}
"""Pages per thousand of the realistic site (/site/N) with each fault kind; the rest (898 per
thousand) are `ok`. Among any 1,000 consecutive page numbers the counts are exact."""

FAULT_KINDS: tuple[str, ...] = ("ok", *FAULT_SHARES)

HEALTHY_KINDS = frozenset({"ok", "flaky", "limited", "prose"})
"""Fault kinds whose pages are real pages with every field once asked again (or at once): a
crawler that loses one of them has lost a healthy page. `gone` and `down` never give the page;
`drift` gives one without its required headline."""

_SPREAD = 389
"""Multiplier (coprime with 1,000) that scatters the fault kinds over the page numbers."""


def fault_of(n: int) -> str:
    """The fault kind of page N of the realistic site: deterministic, from N alone."""
    slot = (n * _SPREAD + 7) % 1000
    for kind, share in FAULT_SHARES.items():
        if slot < share:
            return kind
        slot -= share
    return "ok"


def port_with_nothing_listening(host: str = "127.0.0.1") -> int:
    """A port on `host` that nothing listens on (picked free by the OS, then closed): a host
    that is down. Connections to it are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


MAX_TIMES = 200_000
"""Request times kept per path family (for the per-second figures of /__stats)."""


def busiest_second(times: deque[float]) -> int:
    """The most requests within any 1-second window."""
    best = start = 0
    ordered = list(times)
    for end, t in enumerate(ordered):
        while t - ordered[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


class DemoSite:
    """The site's state: request counters and per-client rate windows."""

    def __init__(
        self,
        *,
        flaky_failures: int,
        limited_rate: float,
        blocked: set[str] | None,
        huge_bytes: int,
        site_retry_after: int = 1,
    ) -> None:
        self.flaky_failures = flaky_failures
        self.site_retry_after = site_retry_after
        self.limited_rate = limited_rate
        self.blocked = blocked
        self.huge_bytes = huge_bytes
        self.by_path: Counter[str] = Counter()
        self.by_client: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.windows: dict[str, deque[float]] = defaultdict(deque)
        self.switch_status = 200
        self.times: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=MAX_TIMES))
        self.by_host: Counter[str] = Counter()
        self.by_fault: Counter[str] = Counter()
        self.by_host_fault: dict[str, Counter[str]] = defaultdict(Counter)
        self.site_seen: Counter[tuple[str, int]] = Counter()
        self.site_limited_until: dict[tuple[str, int], float] = {}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.count])
        app.router.add_get("/product/{n:\\d+}", self.page)
        app.router.add_get("/flaky/{n:\\d+}", self.flaky)
        app.router.add_get("/limited/{n:\\d+}", self.limited)
        app.router.add_get("/blocked/{n:\\d+}", self.blocked_page)
        app.router.add_get("/captcha/{n:\\d+}", lambda r: web.Response(text=CAPTCHA, content_type="text/html"))
        app.router.add_get("/prose/{n:\\d+}", self.prose)
        app.router.add_get(
            "/challenge/{n:\\d+}",
            lambda r: web.Response(
                text=CHALLENGE, content_type="text/html", headers={"cf-mitigated": "challenge", "Server": "cloudflare"}
            ),
        )
        app.router.add_get("/drift/{n:\\d+}", self.drift)
        app.router.add_get("/gone/{n:\\d+}", lambda r: web.Response(status=404, text="Not Found"))
        app.router.add_get("/removed/{n:\\d+}", lambda r: web.Response(status=410, text="Gone"))
        app.router.add_get("/private/{n:\\d+}", lambda r: web.Response(status=401, text="Unauthorized"))
        app.router.add_get("/slow/{n:\\d+}", self.slow)
        app.router.add_get("/huge/{n:\\d+}", self.huge)
        app.router.add_get("/loop/{n:\\d+}", self.loop)
        app.router.add_get("/moved/{n:\\d+}", self.moved)
        app.router.add_get(
            "/to-file/{n:\\d+}", lambda r: web.Response(status=302, headers={"Location": "file:///etc/passwd"})
        )
        app.router.add_get("/nested/{n:\\d+}", lambda r: web.Response(body=NESTED, content_type="text/html"))
        app.router.add_get("/attributes/{n:\\d+}", lambda r: web.Response(body=ATTRIBUTES, content_type="text/html"))
        app.router.add_get("/switch/{n:\\d+}", self.switch)
        app.router.add_get("/site/{n:\\d+}", self.site_page)
        app.router.add_post("/__switch", self.set_switch)
        app.router.add_get("/__stats", self.stats)
        app.router.add_post("/__reset", self.reset)
        return app

    @web.middleware
    async def count(self, request: web.Request, handler):  # noqa: ANN001, ANN201
        if not request.path.startswith("/__"):
            self.by_path[request.path] += 1
            self.by_client[request.remote or "?"] += 1
            self.times["/" + request.path.split("/")[1]].append(time.monotonic())
            self.by_host[host_of(request)] += 1
        response = await handler(request)
        if not request.path.startswith("/__"):
            self.by_status[response.status] += 1
        return response

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=product(int(request.match_info["n"])), content_type="text/html")

    async def flaky(self, request: web.Request) -> web.Response:
        if self.by_path[request.path] <= self.flaky_failures:
            return web.Response(status=503, text="Service Unavailable")
        return await self.page(request)

    async def limited(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        window = self.windows[request.remote or "?"]
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= self.limited_rate:
            return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": "1"})
        window.append(now)
        return await self.page(request)

    async def blocked_page(self, request: web.Request) -> web.Response:
        if self.blocked is None or request.remote in self.blocked:
            return web.Response(status=403, text="Forbidden")
        return await self.page(request)

    async def prose(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        price = f"{(n * 37) % 1000 / 10 + 1:.2f}"
        return web.Response(text=PROSE.format(n=n, price=price), content_type="text/html")

    async def drift(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        return web.Response(text=DRIFTED.format(n=n, price=n), content_type="text/html")

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.query.get("ms", "2000")) / 1000)
        return await self.page(request)

    async def huge(self, request: web.Request) -> web.Response:
        return web.Response(body=b"<html><body>" + b"x" * self.huge_bytes + b"</body></html>", content_type="text/html")

    async def loop(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/loop/{n + 1}")

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(f"/product/{request.match_info['n']}")

    async def switch(self, request: web.Request) -> web.Response:
        if self.switch_status != 200:
            return web.Response(status=self.switch_status, text=f"switched to {self.switch_status}")
        return await self.page(request)

    async def site_page(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        kind = fault_of(n)
        host = host_of(request)
        self.by_fault[kind] += 1
        self.by_host_fault[host][kind] += 1
        self.site_seen[host, n] += 1
        if kind == "gone":
            return web.Response(status=404, text="Not Found")
        if kind == "down" or (kind == "flaky" and self.site_seen[host, n] == 1):
            return web.Response(status=503, text="Service Unavailable")
        if kind == "limited":
            now = time.monotonic()
            until = self.site_limited_until.setdefault((host, n), now + self.site_retry_after)
            if now < until:
                return web.Response(
                    status=429, text="Too Many Requests", headers={"Retry-After": str(max(1, math.ceil(until - now)))}
                )
        if kind == "prose":
            return await self.prose(request)
        html = product(n).replace(DRIFTED_HEADLINE, '<h1 class="headline">') if kind == "drift" else product(n)
        return web.Response(text=html, content_type="text/html")

    async def set_switch(self, request: web.Request) -> web.Response:
        self.switch_status = int(request.query.get("status", "200"))
        return web.json_response({"switch": self.switch_status})

    async def stats(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "by_path": self.by_path,
                "by_client": self.by_client,
                "by_status": {str(k): v for k, v in self.by_status.items()},
                "families": {
                    family: {"count": len(t), "first": t[0], "last": t[-1], "busiest_second": busiest_second(t)}
                    for family, t in self.times.items()
                    if t
                },
                "by_host": self.by_host,
                "by_fault": self.by_fault,
                "by_host_fault": self.by_host_fault,
                "total": sum(self.by_path.values()),
            }
        )

    async def reset(self, _request: web.Request) -> web.Response:
        self.by_path.clear()
        self.by_client.clear()
        self.by_status.clear()
        self.windows.clear()
        self.times.clear()
        self.by_host.clear()
        self.by_fault.clear()
        self.by_host_fault.clear()
        self.site_seen.clear()
        self.site_limited_until.clear()
        return web.json_response({"reset": True})


def host_of(request: web.Request) -> str:
    """HOST:PORT the request came in on (each port is a target of its own)."""
    address = request.transport.get_extra_info("sockname") if request.transport else None
    return f"{address[0]}:{address[1]}" if address else request.host


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument(
        "--extra-port", type=int, action="append", default=[], help="also serve the site on this port (another target)"
    )
    parser.add_argument("--flaky-failures", type=int, default=2)
    parser.add_argument("--limited-rate", type=float, default=20.0)
    parser.add_argument("--block", action="append", help="client address to answer 403 on /blocked/")
    parser.add_argument("--huge-bytes", type=int, default=5 * 1024 * 1024)
    parser.add_argument(
        "--site-retry-after",
        type=int,
        default=1,
        help="seconds a `limited` page of /site/ answers 429 (its Retry-After)",
    )
    args = parser.parse_args()
    site = DemoSite(
        flaky_failures=args.flaky_failures,
        limited_rate=args.limited_rate,
        blocked=set(args.block) if args.block else None,
        huge_bytes=args.huge_bytes,
        site_retry_after=args.site_retry_after,
    )

    serve_forever(site.app(), args.host, args.port, args.extra_port)


def serve_forever(app: web.Application, host: str, port: int, extra_ports: list[int] | None = None) -> None:
    """Serve `app` on `port` (and `extra_ports`), print `ready http://HOST:PORT` once every
    port listens, and run until interrupted."""

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for each in (*(extra_ports or ()), port):
            await web.TCPSite(runner, host, each).start()
        print(f"ready http://{host}:{port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
