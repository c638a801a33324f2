#!/usr/bin/env python3
"""wsgate over TLS with the Python `websockets` client: wss:// and https:// against a gateway
started with --tls-cert/--tls-key, whose certificate a test CA signed.

    python3 clients/python/test_tls.py --url https://localhost:PORT --ca CA.pem

The client trusts the CA of --ca and nothing else (an ssl.SSLContext with cafile, hostname
checked): the checks are the handshake (verified, and refused without the CA), echo of text and
binary, pub/sub between two clients both ways, messages of a few MB, https endpoints, and a
clean close (1000 both ways, counted by the gateway). Prints one line per check (PASS or FAIL,
its name, and why it failed), then `N passed, N failed`, and exits 1 when any failed (2 on bad
arguments). Every read has a timeout, so a message that never comes fails the check instead of
hanging it. The same checks, with the same names, as clients/node/test_tls.mjs.
"""

import argparse
import asyncio
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import websockets
from websockets.exceptions import ConnectionClosed

import harness
from harness import CheckFailed, binary_publish, expect, expect_eq

TIMEOUT = 10.0  # seconds: the longest any single read waits
ARGS = None


def tls_context():
    """Trusts the test CA only; the hostname (or IP address) must be in the certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ARGS.ca)
    expect(ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname, "a verifying context")
    return ctx


class Client(harness.Client):
    """A client of the TLS port that trusts the test CA only."""

    @classmethod
    async def open(cls, path="/ws", base=None, **options):
        """Connects; `options` go to `connect`; `base` replaces the --url."""
        ssl_context = options.pop("ssl", None) or tls_context()
        return await cls.connect((base or ARGS.ws_url) + path, TIMEOUT, ssl=ssl_context, **options)

    def ssl_object(self):
        return self.ws.transport.get_extra_info("ssl_object")


def multibyte_text(n_bytes):
    """About `n_bytes` of UTF-8 text with 1- to 4-byte characters, never the same twice in a row."""
    unit = "wsgate tls é ö ß Ж € ✓ 日本語 한국어 😀 🚀 𝄞 "
    out = (unit * (n_bytes // len(unit.encode()) + 1)).encode()[:n_bytes].decode(errors="ignore")
    return out + os.urandom(8).hex()


def https_get(path):
    """(status, body text) of GET path over https, trusting the test CA only."""
    req = urllib.request.Request(ARGS.url + path)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT, context=tls_context()) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def metric(series):
    """One sample of /metrics, by its full series name (`name{labels}`); 0 when absent."""
    status, text = await asyncio.to_thread(https_get, "/metrics")
    expect_eq(status, 200, "GET /metrics")
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line[len(series) + 1 :])
    return 0.0


# ---- the checks ------------------------------------------------------------------------------

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
async def handshake_is_verified_against_the_test_ca():
    c = await Client.open("/echo")
    tls = c.ssl_object()
    expect(tls is not None, "no TLS on a wss:// connection")
    expect(tls.version() in ("TLSv1.2", "TLSv1.3"), f"TLS version {tls.version()}")
    peer = tls.getpeercert()
    subject = dict(x[0] for x in peer["subject"])
    expect_eq(subject.get("commonName"), "wsgate test server", "the server certificate's CN")
    expect(("DNS", "localhost") in peer["subjectAltName"], f"SANs {peer['subjectAltName']}")
    await c.send("hello over wss")
    expect_eq(await c.recv_text("the echo"), "hello over wss", "echo")
    version = tls.version()
    await c.close()
    # by IP address: the certificate's IP SAN
    port = urllib.parse.urlsplit(ARGS.url).port
    c = await Client.open("/echo", base=f"wss://127.0.0.1:{port}")
    await c.send("by address")
    expect_eq(await c.recv_text("the echo"), "by address", "echo over wss://127.0.0.1")
    await c.close()
    # without the test CA (the system's roots only) the certificate is refused
    try:
        c = await Client.open("/echo", ssl=ssl.create_default_context())
    except ssl.SSLCertVerificationError as e:
        expect("certificate verify failed" in str(e), f"the refusal: {e}")
    else:
        await c.close()
        raise CheckFailed("a client without the test CA accepted the certificate")
    return f"{version}, {tls.cipher()[0]}"


@check
async def echo_text_and_binary():
    c = await Client.open("/echo")
    sizes = [0, 1, 125, 126, 16_383, 16_384, 16_385, 65_535, 65_536, 1_000_000]
    for n in sizes:
        data = os.urandom(n)
        await c.send(data)
        got = await c.recv_binary(f"the echo of {n} binary bytes")
        expect(got == data, f"binary echo of {n} bytes differs ({len(got)} bytes came back)")
        text = multibyte_text(n)
        await c.send(text)
        expect_eq(await c.recv_text(f"the echo of {n} bytes of text"), text, f"text echo of about {n} bytes")
    await c.close()
    return f"{len(sizes)} sizes up to {sizes[-1]} bytes, text and binary"


@check
async def pubsub_between_two_clients():
    a = await Client.open("/ws?subscribe=py-tls-a")
    b = await Client.open("/ws")
    await b.acked({"type": "subscribe", "topic": "py-tls-b", "id": 1})
    # a text publish from b reaches a, data verbatim; the publish is acked to b
    await b.send('{"type":"publish","topic":"py-tls-a","data":{"x":[1,2.50,"é"]},"id":2}')
    expect_eq(await b.recv_json("the publish ack"), {"type": "ack", "id": 2}, "publish ack")
    expect_eq(
        await a.recv_text("the text delivery"),
        '{"type":"message","topic":"py-tls-a","data":{"x":[1,2.50,"é"]}}',
        "text delivery",
    )
    # and the other way, binary, byte for byte
    payload = os.urandom(70_000)
    await a.send(binary_publish("py-tls-b", payload))
    expect(await b.recv_binary("the binary delivery") == binary_publish("py-tls-b", payload), "binary delivery differs")
    # in order: 1000 publishes from a to b
    n = 1000
    for i in range(n):
        await a.send('{"type":"publish","topic":"py-tls-b","data":%d}' % i)
    for i in range(n):
        expect_eq(await b.recv_text(f"delivery {i}"), '{"type":"message","topic":"py-tls-b","data":%d}' % i, "in order")
    await a.close()
    await b.close()
    return f"text and binary both ways, {n} in order"


@check
async def large_messages():
    size = 4 * 1024 * 1024
    c = await Client.open("/echo")
    data = os.urandom(size)
    t = time.monotonic()
    await c.send(data)
    got = await c.recv_binary("the echo of 4 MiB")
    echo_s = time.monotonic() - t
    expect(got == data, f"4 MiB binary echo differs ({len(got)} bytes came back)")
    text = multibyte_text(3_000_000)
    await c.send(text)
    expect_eq(await c.recv_text("the echo of 3 MB of text"), text, "3 MB text echo")
    await c.close()
    # through pub/sub: 3 MiB from one client to another
    sub = await Client.open("/ws?subscribe=py-tls-large")
    pub = await Client.open("/ws")
    payload = os.urandom(3 * 1024 * 1024)
    await pub.send(binary_publish("py-tls-large", payload))
    got = await sub.recv_binary("the 3 MiB delivery")
    expect(got == binary_publish("py-tls-large", payload), f"3 MiB delivery differs ({len(got)} bytes)")
    await pub.close()
    await sub.close()
    return f"4 MiB echo in {echo_s:.2f} s"


@check
async def https_endpoints():
    for path, want in [("/healthz", "ok"), ("/readyz", "ready")]:
        status, body = await asyncio.to_thread(https_get, path)
        expect_eq((status, body.strip()), (200, want), f"GET {path}")
    status, body = await asyncio.to_thread(https_get, "/metrics")
    expect_eq(status, 200, "GET /metrics")
    expect("wsgate_upgrades_total" in body, "wsgate_upgrades_total in /metrics")


@check
async def clean_close():
    received = await metric('wsgate_closes_received_total{code="1000"}')
    sent = await metric('wsgate_closes_sent_total{code="1000"}')
    c = await Client.open("/ws?subscribe=py-tls-close")
    await c.acked({"type": "subscribe", "topic": "py-tls-close-2", "id": 1})
    t = time.monotonic()
    await c.ws.close(1000, "bye")
    took = time.monotonic() - t
    expect(c.ws.protocol.close_sent is not None and c.ws.protocol.close_sent.code == 1000, f"close sent: {c.ws.protocol.close_sent}")
    expect(c.ws.protocol.close_rcvd is not None, "no close frame from the gateway")
    expect_eq(c.ws.protocol.close_rcvd.code, 1000, "the gateway's close code")
    expect(c.ws.protocol.close_rcvd_then_sent is False, "the client closed first")
    # the gateway ended the TCP connection itself after the close: no close timeout ran out
    expect(took < TIMEOUT / 2, f"the close took {took:.2f} s")
    expect_eq(await metric('wsgate_closes_received_total{code="1000"}') - received, 1.0, "closes received (1000)")
    expect_eq(await metric('wsgate_closes_sent_total{code="1000"}') - sent, 1.0, "closes sent (1000)")
    # the connection is done: a send fails
    try:
        await c.send("after the close")
    except ConnectionClosed:
        pass
    else:
        raise CheckFailed("a send after the close did not fail")
    return f"closed in {took * 1000:.0f} ms"


# ---- the runner ------------------------------------------------------------------------------


async def run_all():
    return await harness.run_checks(CHECKS, [], ARGS.check_timeout)


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the gateway, https://HOST:PORT")
    p.add_argument("--ca", required=True, help="the CA certificate (PEM) to trust")
    p.add_argument("--check-timeout", type=float, default=60.0, help="seconds one check may take")
    ARGS = p.parse_args()
    u = urllib.parse.urlsplit(ARGS.url)
    if u.scheme != "https" or not u.netloc:
        p.error(f"--url must be https://HOST:PORT, not {ARGS.url!r}")
    ARGS.url = f"https://{u.netloc}"
    ARGS.ws_url = f"wss://{u.netloc}"
    print(f"websockets {websockets.__version__} ({ssl.OPENSSL_VERSION}) against {ARGS.url}", flush=True)
    sys.exit(1 if asyncio.run(run_all()) else 0)


if __name__ == "__main__":
    main()
