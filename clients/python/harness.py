"""What clients/python's checks share: failures that say what was wrong, a `websockets` client
whose reads time out instead of hanging, and the loop that runs the checks and prints one line
each."""

import asyncio
import json
import time
import traceback

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


class CheckFailed(Exception):
    """A check's failure, with what was expected and what came."""


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


def expect_eq(got, want, what):
    if got != want:
        g, w = repr(got), repr(want)
        raise CheckFailed(f"{what}: got {g[:300]}, want {w[:300]}")


def binary_publish(topic, payload):
    """A binary publish: `[L][topic][payload]`."""
    t = topic.encode()
    return bytes([len(t)]) + t + payload


class Client:
    """A `websockets` connection whose reads time out after `timeout` seconds."""

    def __init__(self, ws, timeout):
        self.ws = ws
        self.timeout = timeout

    @classmethod
    async def connect(cls, url, timeout, **options):
        """Connects to `url`; `options` go to `connect`."""
        ws = await connect(url, max_size=None, open_timeout=timeout, close_timeout=timeout, **options)
        return cls(ws, timeout)

    async def recv(self, timeout=None, what="a message"):
        timeout = timeout or self.timeout
        try:
            return await asyncio.wait_for(self.ws.recv(), timeout)
        except asyncio.TimeoutError:
            raise CheckFailed(f"timed out after {timeout} s waiting for {what}") from None
        except ConnectionClosed as e:
            raise CheckFailed(f"connection closed while waiting for {what}: {e}") from None

    async def recv_text(self, what="a text message"):
        m = await self.recv(what=what)
        expect(isinstance(m, str), f"expected {what}, got a binary message {m[:64]!r}")
        return m

    async def recv_json(self, what="a JSON text message"):
        m = await self.recv_text(what)
        try:
            return json.loads(m)
        except ValueError:
            raise CheckFailed(f"not JSON: {m[:300]!r}") from None

    async def recv_binary(self, what="a binary message"):
        m = await self.recv(what=what)
        expect(isinstance(m, bytes), f"expected {what}, got a text message {m[:200]!r}")
        return m

    async def send(self, msg):
        await self.ws.send(msg)

    async def send_json(self, obj):
        await self.ws.send(json.dumps(obj))

    async def acked(self, obj):
        """Sends a control message with an id; the very next message must be its exact ack."""
        await self.send_json(obj)
        reply = await self.recv_json(f"the ack of {obj}")
        expect_eq(reply, {"type": "ack", "id": obj["id"]}, f"reply to {obj}")

    async def closed_with(self, timeout=None):
        """Skips data messages until the gateway closes; returns the close code and reason."""
        timeout = timeout or self.timeout
        try:
            async with asyncio.timeout(timeout):
                await self.ws.wait_closed()
        except TimeoutError:
            raise CheckFailed(f"the gateway did not close the connection within {timeout} s") from None
        return self.ws.close_code, self.ws.close_reason

    async def close(self):
        await self.ws.close()


async def run_checks(checks, only, check_timeout):
    """Runs `checks` (async functions; only those named in `only` when it is not empty), each
    within `check_timeout` seconds; prints `PASS name time (note)` or `FAIL name: why`, then the
    counts. Returns the number that failed."""
    passed = failed = 0
    for fn in checks:
        name = fn.__name__
        if only and name not in only:
            continue
        t = time.monotonic()
        try:
            note = await asyncio.wait_for(fn(), check_timeout)
            detail = f" ({note})" if note else ""
            print(f"PASS {name} {time.monotonic() - t:.2f}s{detail}", flush=True)
            passed += 1
        except CheckFailed as e:
            print(f"FAIL {name}: {e}", flush=True)
            failed += 1
        except asyncio.TimeoutError:
            print(f"FAIL {name}: the whole check took over {check_timeout} s", flush=True)
            failed += 1
        except Exception:  # an exception from the client library: a failure too
            print(f"FAIL {name}: {traceback.format_exc()}", flush=True)
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return failed
