// permessage-deflate with Chromium. Against the gateway under test (compression on, its
// default) `ws.extensions` is the gateway's answer, and text (repetitive and random multi-byte
// UTF-8) and binary (repetitive and random; sent as an ArrayBuffer and as a Blob, received as
// the same) of 16 B, 1 KiB and 1 MiB round trip through /echo byte for byte, from the page and
// from a dedicated Worker; so do 32 MiB messages of every kind, half of them from the page and
// half from the Worker (the gateway of the tests is a debug build: inflating a 32 MiB message
// takes it seconds). Chromium compresses what it sends, so the gateway inflates all that, and
// compresses its echoes of 128 B to 1 MiB when they shrink (larger ones go out plain). Through
// a byte-counting TCP relay, a 1 MiB repetitive message crosses the wire compressed both ways;
// /metrics counts the compressions. Against a gateway of its own started with
// --compression false, `ws.extensions` is empty and a round trip still works.

import net from "node:net";
import { launch, gatewayPage, check, equal, metric, OwnGateway, PAGE_HELPERS } from "../lib.mjs";

const SIZES = [16, 1024, 1024 * 1024];
const HUGE = 32 * 1024 * 1024;
const KINDS = ["text, repetitive", "text, random", "ArrayBuffer, repetitive", "ArrayBuffer, random", "Blob, repetitive", "Blob, random"];
/** The kinds of 32 MiB message each place sends: every kind once. */
const HUGE_KINDS = {
  page: ["text, repetitive", "ArrayBuffer, random", "Blob, repetitive"],
  worker: ["text, random", "ArrayBuffer, repetitive", "Blob, random"],
};
const ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/**
 * Runs in the page or in the Worker (PAGE_HELPERS installed): every round trip, compared where
 * it arrives. Self-contained apart from the helpers: its source is sent to the Worker.
 */
async function roundTrips(base, sizes, huge, hugeKinds) {
  /** `n` UTF-8 bytes of JSON-like text, 1- to 4-byte characters repeated: compresses well. */
  const repetitiveText = (n) => {
    const unit = '{"sym":"ÉTÉ","px":101.25,"note":"日本語 ✓ 😀 Жж"},';
    const u = new TextEncoder().encode(unit).length;
    return unit.repeat(Math.floor(n / u)) + "x".repeat(n % u);
  };
  /** `n` UTF-8 bytes of random 1- to 4-byte characters (xorshift from `seed`): compresses poorly. */
  const randomText = (n, seed) => {
    const ranges = [[0x20, 0x7f, 1], [0xa0, 0x800, 2], [0x4e00, 0x9fff, 3], [0x1f300, 0x1f650, 4]];
    let x = seed >>> 0 || 1;
    const parts = [];
    let chunk = [];
    let bytes = 0;
    for (;;) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      const [lo, hi, len] = ranges[x & 3];
      if (bytes + len > n) break;
      chunk.push(lo + ((x >>> 2) % (hi - lo)));
      bytes += len;
      if (chunk.length === 8192) {
        parts.push(String.fromCodePoint(...chunk));
        chunk = [];
      }
    }
    parts.push(String.fromCodePoint(...chunk));
    return parts.join("") + "x".repeat(n - bytes);
  };
  const repetitiveBytes = (n) => new TextEncoder().encode(repetitiveText(n));
  const sameBytes = (a, b) => {
    if (a.length !== b.length) return false;
    const words = a.length >>> 2;
    const wa = new Uint32Array(a.buffer, a.byteOffset, words);
    const wb = new Uint32Array(b.buffer.slice(b.byteOffset, b.byteOffset + words * 4));
    for (let i = 0; i < words; i++) if (wa[i] !== wb[i]) return false;
    for (let i = words * 4; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  };

  const asBuffer = await wsOpen(wsUrl(base, "/echo"), "arraybuffer");
  const asBlob = await wsOpen(wsUrl(base, "/echo"), "blob");
  const out = { extensions: [asBuffer.extensions, asBlob.extensions], results: [] };
  const plan = [...sizes.map((n) => [n, null]), [huge, hugeKinds]];
  for (const [n, only] of plan) {
    const repetitive = repetitiveBytes(n);
    const random = genBytes(n, n + 1);
    const cases = [
      ["text, repetitive", asBuffer, () => repetitiveText(n)],
      ["text, random", asBuffer, () => randomText(n, n)],
      ["ArrayBuffer, repetitive", asBuffer, () => repetitive],
      ["ArrayBuffer, random", asBuffer, () => random],
      ["Blob, repetitive", asBlob, () => repetitive],
      ["Blob, random", asBlob, () => random],
    ];
    for (const [what, ws, make] of cases) {
      if (only && !only.includes(what)) continue;
      const data = make();
      const text = typeof data === "string";
      const t0 = performance.now();
      ws.send(text ? data : what.startsWith("Blob") ? new Blob([data]) : data.buffer);
      const back = await wsNext(ws, 60000);
      const ms = performance.now() - t0;
      const kind = Object.prototype.toString.call(back);
      const ok = text ? back === data : sameBytes(await toBytes(back), data);
      const bytes = text ? new TextEncoder().encode(data).length : data.length;
      out.results.push({ what, n, bytes, kind, ok, ms });
    }
  }
  asBuffer.close();
  asBlob.close();
  return out;
}

/**
 * A TCP relay on 127.0.0.1 to `addr` that counts the bytes each way: {port, up (client to
 * gateway), down, close()}.
 */
async function countingRelay(addr) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))];
  const relay = { up: 0, down: 0, sockets: new Set() };
  const server = net.createServer((client) => {
    const gateway = net.connect(port, host);
    for (const s of [client, gateway]) {
      relay.sockets.add(s);
      s.on("error", () => {
        client.destroy();
        gateway.destroy();
      });
    }
    client.on("data", (d) => (relay.up += d.length));
    gateway.on("data", (d) => (relay.down += d.length));
    client.pipe(gateway);
    gateway.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  relay.port = server.address().port;
  relay.close = () => {
    for (const s of relay.sockets) s.destroy();
    server.close();
  };
  return relay;
}

export async function run({ url, bin, note }) {
  const log = [];
  const off = await OwnGateway.start(bin, ["--listen", "127.0.0.1:0", "--workers", "1", "--compression", "false"], log);
  const b = await launch();
  try {
    const { page } = b;
    await gatewayPage(page, url);
    const verify = (where, r) => {
      equal(r.extensions, [ANSWER, ANSWER], `${where}: ws.extensions`);
      equal(r.results.length, SIZES.length * KINDS.length + 3, `${where}: round trips`);
      for (const x of r.results) {
        check(x.ok, `${where}: ${x.what} of ${x.n} bytes came back different (${x.kind})`);
        equal(x.bytes, x.n, `${where}: ${x.what} size in bytes`);
        const want = x.what.startsWith("text") ? "[object String]" : x.what.startsWith("Blob") ? "[object Blob]" : "[object ArrayBuffer]";
        equal(x.kind, want, `${where}: ${x.what} of ${x.n} bytes, type of the echo`);
      }
      const big = r.results.filter((x) => x.n === HUGE);
      note(
        `${where}: ${r.results.length} round trips byte for byte; 32 MiB: ` +
          big.map((x) => `${x.what} ${x.ms.toFixed(0)} ms`).join(", "),
      );
    };

    const before = {
      compressions: await metric(url, "wsgate_compressions_total"),
      sessions: await metric(url, "wsgate_deflate_sessions_total"),
    };
    const fromPage = await page.evaluate(
      async ({ src, args }) => new Function(`return (${src})`)()(...args),
      { src: roundTrips.toString(), args: [url, SIZES, HUGE, HUGE_KINDS.page] },
    );
    verify("page", fromPage);

    const fromWorker = await page.evaluate(
      async ({ helpers, src, args }) => {
        const code = `${helpers}\nconst roundTrips = ${src};\n` +
          `onmessage = async (e) => {\n` +
          `  try { postMessage({ ok: await roundTrips(...e.data), inWorker: typeof document === "undefined" }); }\n` +
          `  catch (err) { postMessage({ error: String(err && err.stack || err) }); }\n` +
          `};`;
        const worker = new Worker(URL.createObjectURL(new Blob([code], { type: "text/javascript" })));
        const answer = await new Promise((resolve, reject) => {
          worker.onmessage = (e) => resolve(e.data);
          worker.onerror = (e) => reject(new Error("worker error: " + e.message));
          worker.postMessage(args);
        });
        worker.terminate();
        return answer;
      },
      { helpers: PAGE_HELPERS, src: roundTrips.toString(), args: [url, SIZES, HUGE, HUGE_KINDS.worker] },
    );
    check(!fromWorker.error, "worker: " + fromWorker.error);
    check(fromWorker.inWorker, "ran in a dedicated Worker");
    verify("dedicated Worker", fromWorker.ok);

    // on the wire: a 1 MiB repetitive message compressed by Chromium, its echo by the gateway
    const relay = await countingRelay(new URL(url).host);
    const size = 1024 * 1024;
    let wire;
    try {
      const sent = await page.evaluate(
        async ({ base, size }) => {
          const unit = new TextEncoder().encode('{"sym":"ÉTÉ","px":101.25,"note":"日本語 ✓ 😀"},');
          const bytes = new Uint8Array(size);
          for (let i = 0; i < size; i += unit.length) bytes.set(unit.subarray(0, Math.min(unit.length, size - i)), i);
          const ws = await wsOpen(wsUrl(base, "/echo"));
          ws.send(bytes);
          const back = new Uint8Array(await wsNext(ws));
          ws.close();
          await wsClosed(ws);
          return { extensions: ws.extensions, size: back.length, same: back.every((b, i) => b === bytes[i]) };
        },
        { base: `http://127.0.0.1:${relay.port}`, size },
      );
      wire = { up: relay.up, down: relay.down };
      equal(sent.extensions, ANSWER, "ws.extensions through the relay");
      check(sent.size === size && sent.same, "the 1 MiB echo through the relay came back different");
    } finally {
      relay.close();
    }
    // each way: the handshake, the message, the close frame
    check(wire.up < size / 8, `Chromium sent ${wire.up} bytes for a 1 MiB repetitive message: not compressed`);
    check(wire.down < size / 8, `the gateway sent ${wire.down} bytes for the echo of a 1 MiB repetitive message: not compressed`);
    note(`a 1 MiB repetitive message on the wire: ${wire.up} bytes up, ${wire.down} bytes back`);

    const after = {
      compressions: await metric(url, "wsgate_compressions_total"),
      sessions: await metric(url, "wsgate_deflate_sessions_total"),
      before: await metric(url, "wsgate_deflate_payload_bytes_before_total"),
      after: await metric(url, "wsgate_deflate_payload_bytes_after_total"),
    };
    equal(after.sessions - before.sessions, 5, `deflate sessions (2 sockets in 2 places, 1 through the relay)`);
    // every echo of 128 B to 1 MiB is compressed (tried), once: 2 sizes, 6 kinds, 2 places, and
    // the one through the relay
    equal(after.compressions - before.compressions, 2 * KINDS.length * 2 + 1, "compressions");
    // the 32 MiB echoes went out plain (before = after); the repetitive ones of 1 MiB shrank
    check(after.after > 0 && after.before - after.after > 6 * 1024 * 1024, `payload bytes ${after.before} -> ${after.after}`);
    note(
      `/metrics: ${after.compressions - before.compressions} compressions, payload bytes ` +
        `${(after.before / 1048576).toFixed(1)} MiB -> ${(after.after / 1048576).toFixed(1)} MiB`,
    );

    // --compression false: the offer is declined, and messages go through plain
    const offUrl = `http://${off.addr}`;
    const declined = await page.evaluate(async (base) => {
      const ws = await wsOpen(wsUrl(base, "/echo"));
      const text = "é ✓ 😀 ".repeat(1000);
      ws.send(text);
      const back = await wsNext(ws);
      ws.close();
      return { extensions: ws.extensions, same: back === text };
    }, offUrl);
    equal(declined.extensions, "", "ws.extensions with --compression false");
    check(declined.same, "the echo with --compression false differs");
    equal(await metric(offUrl, "wsgate_deflate_sessions_total"), 0, "deflate sessions with --compression false");
    equal(await metric(offUrl, "wsgate_compressions_total"), 0, "compressions with --compression false");
    note(`--compression false: ws.extensions "" and a plain round trip`);
    check(b.errors.length === 0, "page errors: " + b.errors.join("; "));
  } finally {
    await b.close();
    await off.kill();
  }
}
