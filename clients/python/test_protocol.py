#!/usr/bin/env python3
"""The checks of shared/PROTOCOL.md, run against a live wsgate with the Python `websockets` client.

    python3 clients/python/test_protocol.py --url http://127.0.0.1:8080 [--max-message-size BYTES]
                                            [--compression on|off]

Prints one line per check (PASS or FAIL, its name, and why it failed), then `N passed, N failed`,
and exits 1 when any check failed (2 on bad arguments). Every read has a timeout, so a message
that never comes fails the check instead of hanging it. --max-message-size must be the gateway's
limit (its default, 64 MiB, unless told otherwise): the too-big check sends one byte more.
--compression says whether the gateway accepts permessage-deflate (its default, on) or was
started with `--compression false` (off): the compression checks expect one or the other.

Error codes: PROTOCOL.md gives the shape of an error (`type`, `id`, `code`, `message`) but not the
codes; the ones checked here are the gateway's (gateway/tests/pubsub.rs checks the same):
unknown_type, invalid_json, invalid_topic, missing_field, invalid_message.
"""

import argparse
import asyncio
import http.client
import json
import os
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate

import harness
from harness import CheckFailed, binary_publish, expect, expect_eq

TIMEOUT = 5.0  # seconds: the longest any single read waits
ARGS = None


class Client(harness.Client):
    """A client of this gateway: paths are taken relative to --url."""

    @classmethod
    async def open(cls, path="/ws", **options):
        """Connects; `options` go to `connect` (compression=None declines permessage-deflate)."""
        return await cls.connect(ARGS.ws_url + path, TIMEOUT, **options)

    def extensions_header(self):
        """The gateway's Sec-WebSocket-Extensions answer, None when it sent none."""
        return self.ws.response.headers.get("Sec-WebSocket-Extensions")

    def deflating(self):
        """Whether permessage-deflate is in use on this connection."""
        return any(isinstance(e, PerMessageDeflate) for e in self.ws.protocol.extensions)


async def expect_error(c, text, code, id_=None):
    await c.send(text)
    v = await c.recv_json(f"the error for {text[:80]!r}")
    expect(isinstance(v, dict), f"{text[:80]!r} -> {v!r}: not an object")
    expect_eq(v.get("type"), "error", f"{text[:80]!r} -> {v}: type")
    expect_eq(v.get("code"), code, f"{text[:80]!r} -> {v}: code")
    expect(isinstance(v.get("message"), str) and v["message"], f"{text[:80]!r} -> {v}: no message")
    if id_ is None:
        expect("id" not in v, f"{text[:80]!r} has no id, but the error has one: {v}")
    else:
        expect("id" in v and v["id"] == id_, f"{text[:80]!r} -> {v}: id not echoed ({id_})")
    expect_eq(set(v) - {"type", "code", "message", "id"}, set(), f"{v}: unexpected fields")


def http_request(method, path, body=None, headers=None):
    """(status, headers, body bytes) of one request; 4xx and 5xx are answers, not exceptions."""
    req = urllib.request.Request(ARGS.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


async def post(path, body, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    return await asyncio.to_thread(http_request, "POST", path, body, headers)


# ---- the checks ------------------------------------------------------------------------------

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
async def health_endpoints():
    for path in ["/healthz", "/readyz"]:
        status, _, body = await asyncio.to_thread(http_request, "GET", path)
        expect_eq(status, 200, f"GET {path} ({body[:100]!r})")


@check
async def subscribe_publish_unsubscribe_acks_with_ids():
    c = await Client.open()
    await c.acked({"type": "subscribe", "topic": "py-ack", "id": 1})
    await c.acked({"type": "subscribe", "topic": "py-ack", "id": 2})  # twice is fine
    # the publisher is subscribed: its own message comes back once, and the publish is acked
    await c.send('{"type":"publish","topic":"py-ack","data":"hello","id":3}')
    got = [await c.recv_json("the delivery and the ack"), await c.recv_json("the delivery and the ack")]
    want_msg = {"type": "message", "topic": "py-ack", "data": "hello"}
    want_ack = {"type": "ack", "id": 3}
    expect(
        sorted(map(json.dumps, got)) == sorted(map(json.dumps, [want_msg, want_ack])),
        f"publish with id 3 to a subscribed topic: got {got}",
    )
    await c.acked({"type": "unsubscribe", "topic": "py-ack", "id": 4})
    # unsubscribing from a topic one never had is fine too
    await c.acked({"type": "unsubscribe", "topic": "py-never", "id": 5})
    # ids may be negative and beyond 2^53: echoed exactly
    big = -9_007_199_254_740_993
    await c.send(json.dumps({"type": "subscribe", "topic": "py-big", "id": big}))
    raw = await c.recv_text("the ack of a large id")
    expect(f'"id":{big}' in raw.replace(" ", ""), f"large id not echoed exactly: {raw}")
    expect_eq(json.loads(raw), {"type": "ack", "id": big}, "ack of a large id")
    # no id: no answer, so the next message is the ack of the next request
    await c.send('{"type":"subscribe","topic":"py-quiet"}')
    await c.send('{"type":"unsubscribe","topic":"py-quiet"}')
    await c.acked({"type": "subscribe", "topic": "py-ack2", "id": 6})
    await c.close()


@check
async def unknown_type_is_an_error_with_the_id():
    c = await Client.open()
    await expect_error(c, '{"type":"shout","topic":"a","id":1}', "unknown_type", 1)
    await expect_error(c, '{"type":"shout","topic":"a"}', "unknown_type")
    await expect_error(c, '{"type":"SUBSCRIBE","topic":"a","id":2}', "unknown_type", 2)
    await c.acked({"type": "subscribe", "topic": "py-still-open", "id": 3})
    await c.close()


@check
async def invalid_json_is_an_error_and_the_session_stays_open():
    c = await Client.open()
    await expect_error(c, '{"type":"subscribe",', "invalid_json")
    await expect_error(c, "not json at all", "invalid_json")
    await expect_error(c, '{"type":"subscribe","topic":"a"} trailing', "invalid_json")
    # an id in a message that is not JSON cannot be trusted... but the gateway echoes it when it
    # comes before the break (gateway/tests/pubsub.rs)
    await expect_error(c, '{"id":7,"type":"subscribe","topic":', "invalid_json", 7)
    # JSON, but not an object
    await expect_error(c, '["subscribe","a"]', "invalid_message")
    await expect_error(c, '"subscribe"', "invalid_message")
    # missing fields
    await expect_error(c, '{"type":"subscribe","id":5}', "missing_field", 5)
    await expect_error(c, '{"type":"publish","topic":"a","id":6}', "missing_field", 6)
    await c.acked({"type": "subscribe", "topic": "py-still-open", "id": 8})
    await c.close()


@check
async def over_long_and_bad_topics_are_errors():
    c = await Client.open()
    long_topic = "t" * 256
    await expect_error(c, json.dumps({"type": "subscribe", "topic": long_topic, "id": 1}), "invalid_topic", 1)
    await expect_error(c, json.dumps({"type": "publish", "topic": long_topic, "data": 1}), "invalid_topic")
    # 128 two-byte characters: 256 bytes, over the limit though only 128 characters
    await expect_error(c, json.dumps({"type": "subscribe", "topic": "é" * 128, "id": 2}, ensure_ascii=False), "invalid_topic", 2)
    await expect_error(c, '{"type":"subscribe","topic":"","id":3}', "invalid_topic", 3)
    await expect_error(c, '{"type":"subscribe","topic":"a\\u0001b","id":4}', "invalid_topic", 4)
    await expect_error(c, '{"type":"subscribe","topic":5,"id":5}', "invalid_topic", 5)
    # exactly 255 bytes is a topic; it works end to end
    max_topic = "m" * 255
    await c.acked({"type": "subscribe", "topic": max_topic, "id": 6})
    await c.send(json.dumps({"type": "publish", "topic": max_topic, "data": [255]}))
    expect_eq(
        await c.recv_text("the delivery on a 255-byte topic"),
        '{"type":"message","topic":"%s","data":[255]}' % max_topic,
        "delivery on a 255-byte topic",
    )
    # binary publishes with a bad length prefix are errors without an id
    for bad in [b"", b"\x00a", b"\x05ab"]:
        await c.send(bad)
        v = await c.recv_json(f"the error for the binary publish {bad!r}")
        expect_eq(v.get("type"), "error", f"binary publish {bad!r} -> {v}")
        expect("id" not in v, f"binary publish {bad!r} -> {v} has an id")
    await c.acked({"type": "subscribe", "topic": "py-still-open", "id": 7})
    await c.close()


@check
async def text_publish_is_delivered_verbatim_to_other_subscribers():
    subs = [await Client.open("/ws?subscribe=py-verbatim") for _ in range(2)]
    pub = await Client.open()
    for data in ['{"x": [1, 2.50, "\\u00e9", "é"], "y": null}', "12345678901234567890123", '"a string"', "-0.0", "true"]:
        await pub.send('{"type":"publish","topic":"py-verbatim","data":%s,"id":1}' % data)
        expect_eq(await pub.recv_json("the publish ack"), {"type": "ack", "id": 1}, "publish ack")
        for s in subs:
            expect_eq(
                await s.recv_text(f"the delivery of {data}"),
                '{"type":"message","topic":"py-verbatim","data":%s}' % data,
                "delivery (data must be the publisher's bytes verbatim)",
            )
    for c in subs + [pub]:
        await c.close()


@check
async def binary_publish_is_delivered_byte_for_byte():
    topic = "py-bin/é"
    sub = await Client.open("/ws?subscribe=" + urllib.parse.quote(topic, safe=""))
    pub = await Client.open()
    for n in [0, 1, 125, 126, 65_535, 65_536, 300_000]:
        payload = os.urandom(n)
        msg = binary_publish(topic, payload)
        await pub.send(msg)
        got = await sub.recv_binary(f"the binary delivery of {n} bytes")
        expect(got == msg, f"binary delivery of {n} payload bytes differs ({len(got)} bytes came)")
    # a fragmented binary publish (three frames) is one message
    msg = binary_publish(topic, b"in three pieces")
    await pub.ws.send([msg[:3], msg[3:10], msg[10:]])
    expect_eq(await sub.recv_binary("the fragmented publish"), msg, "fragmented binary publish")
    # a fragmented text publish too
    text = '{"type":"publish","topic":"%s","data":{"frag":true}}' % topic
    await pub.ws.send([text[:5], text[5:30], text[30:]])
    expect_eq(
        await sub.recv_text("the fragmented text publish"),
        '{"type":"message","topic":"%s","data":{"frag":true}}' % topic,
        "fragmented text publish",
    )
    for c in [sub, pub]:
        await c.close()


@check
async def subscribe_at_connect_with_the_query_string():
    # subscribed before the 101: a publish right after the handshake reaches it, no round trip
    sub = await Client.open("/ws?subscribe=py-q-a,py-q-b%2Cc,%C3%A9t%C3%A9")
    pub = await Client.open()
    for topic, data in [("py-q-b", 1), ("c", 2), ("py-q-b,c", 3), ("py-q-a", 4), ("été", 5)]:
        await pub.acked({"type": "publish", "topic": topic, "data": data, "id": data})
    # "py-q-b" and "c" alone were not subscribed (the comma was percent-encoded)
    for topic, data in [("py-q-b,c", 3), ("py-q-a", 4), ("été", 5)]:
        expect_eq(
            await sub.recv_json(f"the delivery on {topic!r}"),
            {"type": "message", "topic": topic, "data": data},
            "delivery to a subscriber of the query",
        )
    # a bad topic in the query refuses the upgrade with a 400
    for query in ["z" * 256, "a%01b", "a,,b"]:
        try:
            c = await Client.open("/ws?subscribe=" + query)
        except InvalidStatus as e:
            expect_eq(e.response.status_code, 400, f"upgrade with ?subscribe={query[:40]}")
        else:
            await c.close()
            if query != "a,,b":  # an empty item may be skipped; the others must be refused
                raise CheckFailed(f"upgrade with ?subscribe={query[:40]} was accepted")
    for c in [sub, pub]:
        await c.close()


@check
async def unsubscribe_stops_delivery():
    sub = await Client.open()
    pub = await Client.open()
    await sub.acked({"type": "subscribe", "topic": "py-unsub", "id": 1})
    await sub.acked({"type": "subscribe", "topic": "py-marker", "id": 2})
    await pub.acked({"type": "publish", "topic": "py-unsub", "data": "before", "id": 1})
    expect_eq(
        await sub.recv_json("the delivery before unsubscribing"),
        {"type": "message", "topic": "py-unsub", "data": "before"},
        "delivery before unsubscribing",
    )
    await sub.acked({"type": "unsubscribe", "topic": "py-unsub", "id": 3})
    await pub.acked({"type": "publish", "topic": "py-unsub", "data": "after", "id": 2})
    await pub.send(binary_publish("py-unsub", b"after, binary"))
    await pub.acked({"type": "publish", "topic": "py-marker", "data": "marker", "id": 3})
    # the publishes after the unsubscribe ack were not delivered: the marker comes first
    expect_eq(
        await sub.recv_json("the marker"),
        {"type": "message", "topic": "py-marker", "data": "marker"},
        "first message after unsubscribing (the marker)",
    )
    for c in [sub, pub]:
        await c.close()


@check
async def ordering_10000_messages_to_3_subscribers():
    n = 10_000
    topic = "py-order"
    subs = [await Client.open("/ws?subscribe=" + topic) for _ in range(3)]
    pub = await Client.open()

    async def read_all(k, sub):
        for i in range(n):
            m = await sub.recv_text(f"message {i} of {n} (subscriber {k})")
            want = '{"type":"message","topic":"%s","data":{"seq": %d}}' % (topic, i)
            if m != want:
                raise CheckFailed(f"subscriber {k}, message {i}: got {m[:120]}, want {want}")
        # nothing extra (no duplicate): the next message is the end marker
        m = await sub.recv_text(f"the end marker (subscriber {k})")
        expect_eq(m, '{"type":"message","topic":"%s","data":"end"}' % topic, f"subscriber {k} after {n} messages")

    readers = [asyncio.create_task(read_all(k, s)) for k, s in enumerate(subs)]
    t = time.monotonic()
    for i in range(n):
        await pub.send('{"type":"publish","topic":"%s","data":{"seq": %d}}' % (topic, i))
    await pub.acked({"type": "publish", "topic": topic, "data": "end", "id": 1})
    try:
        await asyncio.gather(*readers)
    finally:
        for r in readers:
            r.cancel()
    took = time.monotonic() - t
    for c in subs + [pub]:
        await c.close()
    return f"{3 * n} deliveries in {took:.2f} s"


@check
async def http_publish_json_reaches_websocket_subscribers():
    topic = "py-http/json"
    subs = [await Client.open("/ws?subscribe=" + urllib.parse.quote(topic, safe="")) for _ in range(3)]
    path = "/publish/" + urllib.parse.quote(topic, safe="")
    body = '{"price": 42, "list": [1, 2.50, "é"]}'
    for ct in ["application/json", "application/json; charset=utf-8"]:
        status, headers, answer = await post(path, body.encode(), ct)
        expect_eq(status, 202, f"POST {path} ({ct}): {answer[:200]!r}")
        expect((headers.get("Content-Type") or "").startswith("application/json"), f"answer Content-Type {headers.get('Content-Type')}")
        expect_eq(json.loads(answer), {"delivered": 3}, "answer of POST /publish")
        for k, s in enumerate(subs):
            expect_eq(
                await s.recv_text(f"the HTTP publish (subscriber {k})"),
                '{"type":"message","topic":"%s","data":%s}' % (topic, body),
                "delivery of an HTTP JSON publish (data verbatim)",
            )
    # JSON that is not JSON is refused (400) and delivers nothing
    status, _, answer = await post(path, b"{not json", "application/json")
    expect_eq(status, 400, f"POST of invalid JSON ({answer[:200]!r})")
    # a topic nobody subscribes to: 202, zero deliveries
    status, _, answer = await post("/publish/py-http-nobody", b"1", "application/json")
    expect_eq((status, json.loads(answer)), (202, {"delivered": 0}), "POST to a topic without subscribers")
    # an over-long topic is refused
    status, _, answer = await post("/publish/" + "t" * 256, b"1", "application/json")
    expect(400 <= status < 500, f"POST to a 256-byte topic: {status} {answer[:200]!r}")
    # the next thing the subscribers see is a fresh publish, not the refused ones
    status, _, _ = await post(path, b'["last"]', "application/json")
    expect_eq(status, 202, "POST after the refused ones")
    for s in subs:
        expect_eq(await s.recv_text("the last HTTP publish"), '{"type":"message","topic":"%s","data":["last"]}' % topic, "delivery after a refused POST")
    for c in subs:
        await c.close()


@check
async def http_publish_binary_reaches_websocket_subscribers():
    topic = "py-http/bin"
    subs = [await Client.open("/ws?subscribe=" + urllib.parse.quote(topic, safe="")) for _ in range(2)]
    path = "/publish/" + urllib.parse.quote(topic, safe="")
    payload = bytes(range(256)) * 2 + os.urandom(1000)
    for ct in ["application/octet-stream", "text/plain", None]:
        status, _, answer = await post(path, payload, ct)
        expect_eq(status, 202, f"POST {path} ({ct}): {answer[:200]!r}")
        expect_eq(json.loads(answer), {"delivered": 2}, f"answer of POST /publish ({ct})")
        for k, s in enumerate(subs):
            got = await s.recv_binary(f"the HTTP binary publish ({ct}, subscriber {k})")
            expect(got == binary_publish(topic, payload), f"binary delivery of an HTTP publish ({ct}) differs: {got[:40]!r}")
    for c in subs:
        await c.close()


@check
async def invalid_utf8_text_closes_with_1007():
    c = await Client.open()
    await c.acked({"type": "subscribe", "topic": "py-utf8", "id": 1})
    await c.ws.send(b'{"type":"publish","topic":"py-utf8","data":"\xff\xfe"}', text=True)
    code, reason = await c.closed_with()
    expect_eq(code, 1007, f"close code after invalid UTF-8 (reason {reason!r})")


@check
async def too_big_message_closes_with_1009():
    c = await Client.open()
    try:
        await c.ws.send(binary_publish("py-big", b"x" * (ARGS.max_message_size - 6) + b"over"))
    except ConnectionClosed:
        pass  # the gateway may close before the whole message went out
    code, reason = await c.closed_with(timeout=TIMEOUT * 4)
    expect_eq(code, 1009, f"close code after a message over --max-message-size {ARGS.max_message_size} (reason {reason!r})")


@check
async def client_close_code_is_echoed():
    for code, reason in [(1000, "done"), (4001, "bye")]:
        c = await Client.open()
        await c.acked({"type": "subscribe", "topic": "py-close", "id": 1})
        try:
            async with asyncio.timeout(TIMEOUT):
                await c.ws.close(code, reason)
        except TimeoutError:
            raise CheckFailed(f"closing with {code}: no answer within {TIMEOUT} s") from None
        expect_eq(c.ws.close_code, code, f"close code the gateway answered to {code}")


@check
async def echo_endpoint_returns_each_message_unchanged():
    c = await Client.open("/echo")
    for msg in ["hello", "é" * 1000, "", b"\x00\x01\xff" * 100, b""]:
        await c.send(msg)
        got = await c.recv(what=f"the echo of {msg[:20]!r}")
        expect_eq(type(got), type(msg), "echo opcode")
        expect(got == msg, f"echo of {len(msg)} differs")
    await c.close()


@check
async def wrong_websocket_version_gets_426():
    def request():
        u = urllib.parse.urlsplit(ARGS.url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT)
        conn.request(
            "GET",
            "/ws",
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "8",
            },
        )
        r = conn.getresponse()
        out = r.status, r.getheader("Sec-WebSocket-Version")
        conn.close()
        return out

    status, version = await asyncio.to_thread(request)
    expect_eq((status, version), (426, "13"), "answer to Sec-WebSocket-Version: 8")


# ---- permessage-deflate (RFC 7692) ---------------------------------------------------------------

DEFLATE_ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
ECHO_SIZES = [16, 1024, 64 * 1024, 1024 * 1024]
DEFLATE_METRICS = [
    "wsgate_deflate_sessions_total",
    "wsgate_compressions_total",
    "wsgate_deflate_payload_bytes_before_total",
    "wsgate_deflate_payload_bytes_after_total",
]


def compression_on():
    return ARGS.compression == "on"


def sized_text(s, n):
    """`s` cut to at most `n` UTF-8 bytes on a character boundary, padded with ASCII to `n`."""
    cut = s.encode()[:n].decode("utf-8", "ignore")
    return cut + "x" * (n - len(cut.encode()))


def repetitive_text(n):
    """`n` UTF-8 bytes of JSON-like text with 2-, 3- and 4-byte characters: compresses well."""
    unit = '{"sym":"ÉTÉ-%d","px":%d.25,"note":"日本語 ✓ 😀 Жж"},'
    return sized_text("".join(unit % (i % 17, 100 + i % 9) for i in range(n // 40 + 1)), n)


def random_text(n, seed):
    """`n` UTF-8 bytes of random characters (1 to 4 bytes each): compresses poorly."""
    rng = random.Random(seed)
    pool = [chr(c) for c in [*range(0x21, 0x7F), *range(0xA1, 0x800, 7), *range(0x4E00, 0x9FFF, 13), *range(0x1F300, 0x1F600, 5)]]
    return sized_text("".join(rng.choices(pool, k=n // 2 + 8)), n)


def repetitive_bytes(n):
    return (b"\x00\x01\x02wsgate\xff\xfe" * (n // 11 + 1))[:n]


def deflate_metrics():
    """The permessage-deflate counters of /metrics, by name."""
    status, _, body = http_request("GET", "/metrics")
    expect_eq(status, 200, "GET /metrics")
    values = {}
    for line in body.decode().splitlines():
        name, _, value = line.partition(" ")
        if name in DEFLATE_METRICS:
            values[name] = float(value)
    expect_eq(sorted(values), sorted(DEFLATE_METRICS), "deflate series in /metrics")
    return values


async def echo_round_trips(c, label):
    """Text (repetitive and random, multi-byte UTF-8) and binary (repetitive and random) of
    each size through /echo, compared byte for byte."""
    for n in ECHO_SIZES:
        for msg in [repetitive_text(n), random_text(n, n), repetitive_bytes(n), os.urandom(n)]:
            kind = "text" if isinstance(msg, str) else "binary"
            expect_eq(len(msg.encode() if isinstance(msg, str) else msg), n, "test message size")
            await c.send(msg)
            got = await c.recv(what=f"the echo of {n} bytes of {kind} ({label})")
            expect_eq(type(got), type(msg), f"echo opcode ({label})")
            expect(got == msg, f"the echo of {n} bytes of {kind} differs ({label})")


@check
async def permessage_deflate_negotiation():
    default = await Client.open("/echo")  # websockets offers permessage-deflate by default
    declined = await Client.open("/echo", compression=None)
    expect_eq(declined.extensions_header(), None, "the answer to a client that offers nothing")
    expect(not declined.deflating(), "deflate in use without an offer")
    narrow = await Client.open(
        "/echo", compression=None, extensions=[ClientPerMessageDeflateFactory(server_max_window_bits=10)]
    )
    if compression_on():
        expect_eq(default.extensions_header(), DEFLATE_ANSWER, "Sec-WebSocket-Extensions")
        expect(default.deflating(), "permessage-deflate not in use")
        expect_eq(narrow.extensions_header(), DEFLATE_ANSWER + "; server_max_window_bits=10", "answer to server_max_window_bits=10")
    else:
        for c in [default, narrow]:
            expect_eq(c.extensions_header(), None, "Sec-WebSocket-Extensions with --compression false")
            expect(not c.deflating(), "permessage-deflate in use with --compression false")
    for c in [default, declined, narrow]:
        await c.send("ping é")
        expect_eq(await c.recv_text("an echo"), "ping é", "echo")
        await c.close()


@check
async def deflate_echo_round_trips():
    for label, options in [("offering deflate", {}), ("declining deflate", {"compression": None})]:
        c = await Client.open("/echo", **options)
        await echo_round_trips(c, label)
        await c.close()
    # a client that limits the server's window: its echoes come back uncompressed, still right
    c = await Client.open("/echo", compression=None, extensions=[ClientPerMessageDeflateFactory(server_max_window_bits=9)])
    await echo_round_trips(c, "server_max_window_bits=9")
    await c.close()


@check
async def deflate_pubsub_delivery():
    topic = "py-deflate"
    subs = [await Client.open("/ws?subscribe=" + topic), await Client.open("/ws?subscribe=" + topic, compression=None)]
    pub = await Client.open()
    data = json.dumps([{"sym": "ÉTÉ-%d" % i, "px": 100.25 + i, "note": "日本語 ✓ 😀"} for i in range(40)], ensure_ascii=False)
    expect(len(data.encode()) > 1024, "the JSON data is over the minimum size")
    await pub.send('{"type":"publish","topic":"%s","data":%s,"id":1}' % (topic, data))
    expect_eq(await pub.recv_json("the publish ack"), {"type": "ack", "id": 1}, "publish ack")
    want = '{"type":"message","topic":"%s","data":%s}' % (topic, data)
    for k, s in enumerate(subs):
        expect_eq(await s.recv_text(f"the delivery (subscriber {k})"), want, "delivery (data verbatim)")
    payload = repetitive_bytes(64 * 1024) + os.urandom(1024)
    await pub.send(binary_publish(topic, payload))
    for k, s in enumerate(subs):
        got = await s.recv_binary(f"the binary delivery (subscriber {k})")
        expect(got == binary_publish(topic, payload), f"binary delivery differs (subscriber {k})")
    for c in subs + [pub]:
        await c.close()


@check
async def deflate_metrics_count_compressions():
    c = await Client.open("/echo")
    text = repetitive_text(64 * 1024)
    before = deflate_metrics()
    await c.send(text)
    expect_eq(await c.recv_text("the echo"), text, "echo")
    await c.close()
    m = deflate_metrics()
    sessions, compressions, bytes_before, bytes_after = (m[k] for k in DEFLATE_METRICS)
    if compression_on():
        expect(sessions > 0, f"wsgate_deflate_sessions_total {sessions}")
        expect(compressions > before["wsgate_compressions_total"], f"wsgate_compressions_total {compressions}")
        expect(0 < bytes_after < bytes_before, f"payload bytes after {bytes_after}, before {bytes_before}")
        return f"{compressions:.0f} compressions, {bytes_before:.0f} -> {bytes_after:.0f} payload bytes"
    expect_eq([sessions, compressions, bytes_before, bytes_after], [0, 0, 0, 0], "deflate counters with --compression false")


# ---- the runner ------------------------------------------------------------------------------


async def run_all(only):
    return await harness.run_checks(CHECKS, only, ARGS.check_timeout)


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the gateway, http://HOST:PORT")
    p.add_argument("--max-message-size", type=int, default=64 * 1024 * 1024, help="the gateway's message limit in bytes")
    p.add_argument("--check-timeout", type=float, default=60.0, help="seconds one check may take")
    p.add_argument("--compression", choices=["on", "off"], default="on", help="whether the gateway accepts permessage-deflate")
    p.add_argument("only", nargs="*", help="run only these checks")
    ARGS = p.parse_args()
    u = urllib.parse.urlsplit(ARGS.url)
    if u.scheme not in ("http", "https") or not u.netloc:
        p.error(f"--url must be http://HOST:PORT, not {ARGS.url!r}")
    ARGS.url = f"{u.scheme}://{u.netloc}"
    ARGS.ws_url = ("wss" if u.scheme == "https" else "ws") + f"://{u.netloc}"
    unknown = set(ARGS.only) - {fn.__name__ for fn in CHECKS}
    if unknown:
        p.error(f"no such checks: {sorted(unknown)}")
    print(f"websockets {websockets.__version__} against {ARGS.url}, compression {ARGS.compression}", flush=True)
    sys.exit(1 if asyncio.run(run_all(set(ARGS.only))) else 0)


if __name__ == "__main__":
    main()
