// The browser's own WebSocket against the gateway: JSON pub/sub, binary publishes from an
// ArrayBuffer and from a Blob received byte for byte with binaryType "arraybuffer" and "blob",
// the permessage-deflate offer declined, 200 sockets open at once, a client close code
// answered by the gateway.

import { launch, gatewayPage, check, equal, sha256, genBytes, withTopic } from "../lib.mjs";

export async function run({ url, note }) {
  const b = await launch();
  try {
    const { page, context } = b;
    // the handshakes as Chromium sent and received them, through the DevTools protocol
    const cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
    const requests = new Map();
    const responses = new Map();
    cdp.on("Network.webSocketCreated", (e) => requests.set(e.requestId, { url: e.url }));
    cdp.on("Network.webSocketWillSendHandshakeRequest", (e) =>
      requests.set(e.requestId, { ...requests.get(e.requestId), headers: e.request.headers }),
    );
    cdp.on("Network.webSocketHandshakeResponseReceived", (e) =>
      responses.set(e.requestId, { status: e.response.status, headers: e.response.headers }),
    );
    await gatewayPage(page, url);

    // ---- JSON pub/sub ----------------------------------------------------------------------
    const json = await page.evaluate(async (base) => {
      const sub = await wsOpen(wsUrl(base, "/ws?subscribe=chat"));
      const pub = await wsOpen(wsUrl(base, "/ws"));
      const data = '{"n": 1, "s": "héllo wörld ✓ 日本 😀", "list": [1, 2.5, null, true]}';
      pub.send(JSON.stringify({ type: "subscribe", topic: "chat-2", id: 1 }));
      const subscribed = await wsNext(pub);
      pub.send(`{"type":"publish","topic":"chat","data":${data},"id":2}`);
      const acked = await wsNext(pub);
      const delivered = await wsNext(sub);
      pub.send(JSON.stringify({ type: "publish", topic: "", data: 1, id: 3 }));
      const refused = JSON.parse(await wsNext(pub));
      const extensions = [sub.extensions, pub.extensions];
      const protocols = [sub.protocol, pub.protocol];
      sub.close();
      pub.close();
      return { data, subscribed, acked, delivered, refused, extensions, protocols };
    }, url);
    equal(json.subscribed, '{"type":"ack","id":1}', "subscribe ack");
    equal(json.acked, '{"type":"ack","id":2}', "publish ack");
    equal(json.delivered, `{"type":"message","topic":"chat","data":${json.data}}`, "delivery with data verbatim");
    equal([json.refused.type, json.refused.id, json.refused.code], ["error", 3, "invalid_topic"], "bad topic refused");
    equal(json.extensions, ["", ""], "ws.extensions (permessage-deflate declined)");
    equal(json.protocols, ["", ""], "ws.protocol");
    note("JSON subscribe/publish/ack/error: ok, data verbatim");

    // ---- permessage-deflate offered, not accepted ------------------------------------------
    check(requests.size >= 2, `CDP saw ${requests.size} WebSocket handshakes`);
    for (const [id, req] of requests) {
      const h = Object.fromEntries(Object.entries(req.headers || {}).map(([k, v]) => [k.toLowerCase(), v]));
      check(/permessage-deflate/.test(h["sec-websocket-extensions"] || ""), `Chromium offered permessage-deflate: ${JSON.stringify(h)}`);
      const res = responses.get(id);
      check(res && res.status === 101, `101 for ${req.url}: ${JSON.stringify(res)}`);
      const rh = Object.keys(res.headers).map((k) => k.toLowerCase());
      check(!rh.includes("sec-websocket-extensions"), `the 101 accepts no extension: ${JSON.stringify(res.headers)}`);
    }
    const offered = [...requests.values()][0].headers;
    note(`Chromium offered "${offered["Sec-WebSocket-Extensions"] || offered["sec-websocket-extensions"]}"; the 101 has no Sec-WebSocket-Extensions; ws.extensions === ""`);

    // ---- binary publishes, ArrayBuffer and Blob, received as arraybuffer and blob ----------
    const sizes = [100_000, 300_001];
    const bin = await page.evaluate(async ({ base, sizes }) => {
      const asBuffer = await wsOpen(wsUrl(base, "/ws?subscribe=bin"), "arraybuffer");
      const asBlob = await wsOpen(wsUrl(base, "/ws?subscribe=bin"), "blob");
      const pub = await wsOpen(wsUrl(base, "/ws"));
      // from an ArrayBuffer
      pub.send(withTopic("bin", genBytes(sizes[0], 7)).buffer);
      // from a Blob: the topic prefix and the payload as parts
      const head = withTopic("bin", new Uint8Array(0));
      pub.send(new Blob([head, new Blob([genBytes(sizes[1], 8)])]));
      const out = {};
      for (const [name, ws] of [["arraybuffer", asBuffer], ["blob", asBlob]]) {
        const got = [await wsNext(ws), await wsNext(ws)];
        out[name] = {
          types: got.map((d) => Object.prototype.toString.call(d)),
          sizes: await Promise.all(got.map(async (d) => (await toBytes(d)).length)),
          hashes: await Promise.all(got.map((d) => sha256(d))),
        };
      }
      for (const ws of [asBuffer, asBlob, pub]) ws.close();
      return out;
    }, { base: url, sizes });
    const expected = [sha256(withTopic("bin", genBytes(sizes[0], 7))), sha256(withTopic("bin", genBytes(sizes[1], 8)))];
    equal(bin.arraybuffer.types, ["[object ArrayBuffer]", "[object ArrayBuffer]"], "binaryType arraybuffer");
    equal(bin.blob.types, ["[object Blob]", "[object Blob]"], "binaryType blob");
    equal(bin.arraybuffer.hashes, expected, "binary deliveries as ArrayBuffer, SHA-256");
    equal(bin.blob.hashes, expected, "binary deliveries as Blob, SHA-256");
    note(`binary publish from ArrayBuffer (${sizes[0]} B) and Blob (${sizes[1]} B): byte for byte as ArrayBuffer and as Blob`);

    // ---- 200 sockets at once ----------------------------------------------------------------
    const many = await page.evaluate(async (base) => {
      const n = 200;
      const t0 = performance.now();
      const sockets = await Promise.all(Array.from({ length: n }, () => wsOpen(wsUrl(base, "/echo"), "arraybuffer", 20000)));
      const opened = performance.now() - t0;
      const stats = await (await fetch("/stats", { cache: "no-store" })).json();
      sockets.forEach((ws, i) => ws.send(`socket ${i} ✓`));
      const echoes = await Promise.all(sockets.map((ws) => wsNext(ws, 20000)));
      const wrong = echoes.filter((e, i) => e !== `socket ${i} ✓`).length;
      sockets.forEach((ws, i) => ws.close(1000, `done ${i}`));
      const closes = await Promise.all(sockets.map((ws) => wsClosed(ws)));
      return {
        open: sockets.filter((ws) => ws.readyState === WebSocket.CLOSED).length,
        opened,
        sessions: stats.sessions,
        wrong,
        codes: [...new Set(closes.map((c) => c.code))],
        clean: closes.every((c) => c.wasClean),
        ms: performance.now() - t0,
      };
    }, url);
    check(many.sessions >= 200, `the gateway held ${many.sessions} sessions with 200 sockets open`);
    equal(many.wrong, 0, "sockets that got someone else's echo");
    equal(many.codes, [1000], "close codes of the 200 sockets");
    check(many.clean, "every close was clean");
    note(`200 sockets open at once in ${many.opened.toFixed(0)} ms (gateway: ${many.sessions} sessions), each got its own echo, all closed 1000 cleanly (${many.ms.toFixed(0)} ms)`);

    // ---- a close code from the page, answered by the gateway -------------------------------
    const closed = await page.evaluate(async (base) => {
      const out = {};
      for (const path of ["/ws", "/echo"]) {
        const ws = await wsOpen(wsUrl(base, path));
        ws.close(4001, "bye");
        out[path] = await wsClosed(ws);
      }
      return out;
    }, url);
    for (const path of ["/ws", "/echo"]) {
      equal(closed[path].code, 4001, `the gateway's answer to close 4001 on ${path}`);
      check(closed[path].wasClean, `clean close on ${path}`);
    }
    note(`page closed with 4001 "bye": the gateway answered 4001 (reason ${JSON.stringify(closed["/ws"].reason)}), wasClean`);
    check(b.errors.length === 0, "page errors: " + b.errors.join("; "));
  } finally {
    await b.close();
  }
}
