#!/usr/bin/env python3
"""Writes the small seed corpora of the fuzz targets into seeds/<target>/ (committed).

Each seed is laid out as its target reads its input (see the doc comment at the top of each
fuzz_targets/*.rs). Rerun after changing a target's input layout: python3 make_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- handshake: [limit u16 le][split u16 le][request] ------------------------------------
def hs(limit, split, request):
    return struct.pack("<HH", limit, split) + request


CHROME = (
    b"GET /ws?subscribe=news,sport HTTP/1.1\r\n"
    b"Host: gateway.example:8080\r\n"
    b"Connection: Upgrade\r\n"
    b"Upgrade: websocket\r\n"
    b"Origin: https://app.example\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, "
    b'x-foo; a="b\\c"; d=1\r\n'
    b"\r\n"
)
write("handshake", "upgrade", hs(8192, 40, CHROME + b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"))
write(
    "handshake",
    "publish_post",
    hs(
        8192,
        10,
        b"POST http://gw/publish/news%2Fsport HTTP/1.1\r\nHost: gw\r\n"
        b"Content-Type: application/json\r\nContent-Length: 13, 13\r\n\r\n{\"a\":[1,2,3]}",
    ),
)
write(
    "handshake",
    "chunked",
    hs(300, 20, b"POST /publish/t HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
)
write(
    "handshake",
    "hixie76",
    hs(8192, 0, b"GET /ws HTTP/1.1\r\nHost: gw\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n"
       b"Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\nSec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\n\r\n^n:ds[4U"),
)
write("handshake", "http10", hs(64, 5, b"GET /healthz HTTP/1.0\r\n\r\n"))
write("handshake", "too_large", hs(16, 3, b"GET /a-long-path-over-the-limit HTTP/1.1\r\n\r\n"))

# ---- frame: [flags][frame limit][message limit][n][n sizes][stream] ------------------------
KEY = b"\x37\xfa\x21\x3d"


def frame(opcode, payload, fin=True, mask=KEY, rsv=0):
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def fr(flags, flim, mlim, sizes, stream):
    return bytes([flags, flim, mlim, len(sizes)]) + bytes(sizes) + stream


session = (
    frame(0x1, b"Hello")
    + frame(0x9, b"ping")
    + frame(0x1, "κό".encode(), fin=False)
    + frame(0xA, b"")
    + frame(0x0, "σμε".encode())
    + frame(0x2, bytes(range(200)))
    + frame(0x8, struct.pack(">H", 1000) + b"bye")
)
write("frame", "server_session", fr(0, 0, 0, [1, 7, 0, 64], session))
write("frame", "server_small_limits", fr(2, 10, 4, [3], session))
write("frame", "client_unmasked", fr(1, 0, 0, [5, 2], frame(0x2, b"x" * 300, mask=None) + frame(0x8, b"", mask=None)))
write("frame", "rsv1_allowed", fr(4 << 2, 0, 0, [], frame(0x1, b"deflated?", rsv=4) + frame(0x1, b"\xff")))
write("frame", "bad_close", fr(0, 0, 0, [2], frame(0x8, struct.pack(">H", 1005))))
write("frame", "len64", fr(0, 0, 0, [9], bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 20) + KEY + b"abc"))

# ---- utf8: [n][n sizes][text] -------------------------------------------------------------
def u8(sizes, text):
    return bytes([len(sizes)]) + bytes(sizes) + text


write("utf8", "mixed", u8([1, 2, 3], "Hello-µ@ßöäü κόσμε 𝄞 €".encode()))
write("utf8", "cut_4byte", u8([3, 1], "a𝄞b".encode()[:3] + b"\xf0\x9f\x98"))
write("utf8", "surrogate", u8([2], b"ok\xed\xa0\x80"))
write("utf8", "overlong", u8([1], b"\xc0\xaf\xe0\x80\xaf"))
write("utf8", "long_ascii_then_bad", u8([200, 100], b"a" * 700 + "é".encode() + b"\xf4\x90\x80\x80"))

# ---- message: [max topics][bytes] ---------------------------------------------------------
def msg(text, max_topics=5):
    return bytes([max_topics]) + text


write("message", "publish", msg(b'{"type":"publish","topic":"news/sport","id":7,"data":{"a":[1,2.5,"x"]}}'))
write("message", "subscribe_escaped", msg(b'{"\\u0074ype":"subscribe","topic":"a\\"b\\u00e9"}'))
write("message", "cut_id", msg(b'{"id":71'))
write("message", "duplicate", msg(b'{"type":"unsubscribe","topic":"t","topic":"u"}'))
write("message", "binary", msg(b"\x04newsPAYLOAD\x00\xff"))
write("message", "query", msg(b"subscribe=a,b%2Cc&subscribe=a+b&x=%zz", 3))
write("message", "path", msg(b"news%2Fsport%F0%9F%98%80+x"))

# ---- framing: [flags][head limit u16 le][body limit u16 le][n][n sizes][stream] -------------
# flags bit 0: a PROXY header is expected; bits 1-2: 0 default limits, 1 small (mod 1024 / 512),
# 2 small head and no body limit, 3 both as given.
def fm(flags, head_limit, body_limit, sizes, stream):
    return struct.pack("<BHHB", flags, head_limit, body_limit, len(sizes)) + bytes(sizes) + stream


def req(method, target, fields=b"", body=b"", length=None, version=b"1.1"):
    head = method + b" " + target + b" HTTP/" + version + b"\r\nHost: gw\r\n" + fields
    if length is not None:
        head += b"Content-Length: " + str(length).encode() + b"\r\n"
    return head + b"\r\n" + body


PIPELINED = (
    req(b"GET", b"/healthz")
    + req(b"POST", b"/publish/news", b"Content-Type: application/json\r\n", b'{"price":42}', 12)
    + req(b"HEAD", b"/readyz", body=b"xy", length=2)
    + req(b"GET", b"/metrics", length=0)
    + b"\r\n"
    + req(b"DELETE", b"/x", version=b"1.0", body=b"abc", length=3)
)
HIDDEN = req(b"GET", b"/admin", b"Authorization: Bearer k\r\n")
SMUGGLE = req(b"GET", b"/healthz", body=HIDDEN, length=len(HIDDEN)) + req(b"GET", b"/readyz")
PROXY_V1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 8080\r\n"
PROXY_V2 = (
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x13"
    + bytes([203, 0, 113, 7, 10, 0, 0, 1, 0xC8, 0x22, 0x1F, 0x90])
    + b"\x03\x00\x04\x01\x02\x03\x04"
)
PROXY_V2_V6 = (
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00\x24"
    + bytes([0x20, 0x01] + [0] * 13 + [1])
    + bytes([0x20, 0x01] + [0] * 13 + [2])
    + b"\x00\x01\xff\xff"
)

write("framing", "pipelined", fm(0, 0, 0, [7, 0, 1, 64], PIPELINED))
write("framing", "pipelined_bytewise", fm(0, 0, 0, [], PIPELINED))
write("framing", "smuggle_in_body", fm(0, 0, 0, [40, 3], SMUGGLE))
write("framing", "smuggle_short_length", fm(0, 0, 0, [5], req(b"GET", b"/", body=HIDDEN, length=4)))
write(
    "framing",
    "smuggle_cl_te",
    fm(0, 0, 0, [9], req(b"POST", b"/publish/a", b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n" + HIDDEN, 5)),
)
write(
    "framing",
    "smuggle_two_lengths",
    fm(0, 0, 0, [11], req(b"POST", b"/publish/a", b"Content-Length: 40\r\n", b"hello" + HIDDEN, 5)),
)
write(
    "framing",
    "chunked",
    fm(0, 0, 0, [13], req(b"POST", b"/publish/a", b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n")),
)
write("framing", "proxy_v1", fm(1, 0, 0, [10, 0, 30], PROXY_V1 + PIPELINED))
write("framing", "proxy_v2", fm(1, 0, 0, [6], PROXY_V2 + SMUGGLE))
write("framing", "proxy_v2_v6", fm(1, 0, 0, [17, 1], PROXY_V2_V6 + PIPELINED))
write("framing", "proxy_unexpected", fm(0, 0, 0, [3], PROXY_V1 + PIPELINED))
write("framing", "proxy_missing", fm(1, 0, 0, [3], PIPELINED))
write("framing", "small_limits", fm(2, 80, 5, [2, 5], PIPELINED))
write("framing", "huge_length", fm(4, 512, 0, [8], req(b"PUT", b"/big", body=b"x" * 100, length=2**64 - 1)))
write("framing", "head_over_limit", fm(6, 30, 10, [1], req(b"GET", b"/a-long-path-over-the-limit") + PIPELINED))
