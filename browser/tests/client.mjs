// /client.js in the browser: promises for acks and errors, messages as events, binary
// publishes, unsubscribe; loaded as a classic script, as a module import and in a Worker; then
// the gateway is stopped (a request pending on it is rejected), killed and started again on the
// same port: the client reconnects with backoff, subscribes again and gets what is published
// after. This test starts its own gateways (--bin).

import { launch, check, equal, until, sleep, OwnGateway } from "../lib.mjs";

export async function run({ bin, note }) {
  const log = [];
  let gateway = await OwnGateway.start(bin, ["--listen", "127.0.0.1:0", "--workers", "1"], log);
  const url = `http://${gateway.addr}`;
  const b = await launch();
  try {
    const { page } = b;
    await page.goto(url + "/healthz");
    await page.addScriptTag({ url: "/client.js" });

    const basics = await page.evaluate(async (base) => {
      const events = (self.events = []);
      const client = (self.client = new WsgateClient(base.replace(/^http/, "ws") + "/ws", {
        reconnect: { min: 100, max: 800, factor: 2, jitter: 0.3 },
        timeout: 5000,
      }));
      for (const type of ["open", "close", "reconnect", "reconnecting", "error"]) {
        client.on(type, (d) => events.push({ type, ...d }));
      }
      const messages = (self.messages = []);
      client.on("message", (m) => messages.push(m));
      const waitMessage = (pred, ms = 5000) => new Promise((resolve, reject) => {
        const found = messages.find(pred);
        if (found) return resolve(found);
        const off = client.on("message", (m) => { if (pred(m)) { off(); clearTimeout(t); resolve(m); } });
        const t = setTimeout(() => { off(); reject(new Error("no such message")); }, ms);
      });
      self.waitMessage = waitMessage;
      const out = {};
      out.opened = await client.once("open");
      out.subscribe = await client.subscribe("news");
      out.publish = await client.publish("news", { n: 1, text: "héllo ✓" });
      out.message = await waitMessage((m) => m.topic === "news");
      const handled = [];
      await client.subscribe("handled", (m) => handled.push(m.data));
      await client.publish("handled", [1, 2, 3]);
      await waitMessage((m) => m.topic === "handled");
      out.handled = handled;
      const rejection = async (p) => p.then(() => ({ resolved: true }), (e) => ({ code: e.code, message: e.message }));
      out.localRefusal = await rejection(client.subscribe(""));
      out.gatewayRefusal = await rejection(client.publish("bad\u0001topic", 1));
      // binary publishes: bytes, and a Blob
      await client.subscribe("bin");
      const bytes = new Uint8Array(256).map((_, i) => i);
      await client.publishBinary("bin", bytes);
      await client.publishBinary("bin", new Blob([bytes.subarray(0, 10)]));
      const bins = [];
      for (let i = 0; i < 2; i++) {
        const m = await waitMessage((m) => m.binary && !bins.includes(m));
        bins.push(m);
      }
      out.binary = bins.map((m) => ({ topic: m.topic, len: m.data.length, ok: m.data.every((v, i) => v === i) }));
      // unsubscribe: no more messages of that topic
      out.unsubscribe = await client.unsubscribe("handled");
      await client.publish("handled", "after");
      await new Promise((r) => setTimeout(r, 300));
      out.handledAfter = handled.length;
      out.topics = [...client.topics].sort();
      // the same file as a module import
      const before = self.WsgateClient;
      await import("/client.js?as-module");
      out.moduleImport = typeof self.WsgateClient === "function" && self.WsgateClient !== undefined && !!before;
      return out;
    }, url);
    equal(basics.opened, { url: url.replace(/^http/, "ws") + "/ws", reconnected: false }, "open event");
    check(Number.isInteger(basics.subscribe.id), `subscribe resolved with the ack's id: ${JSON.stringify(basics.subscribe)}`);
    check(basics.publish.id > basics.subscribe.id, "publish resolved with its id");
    equal(basics.message, { topic: "news", data: { n: 1, text: "héllo ✓" }, binary: false }, "message event");
    equal(basics.handled, [[1, 2, 3]], "subscribe(topic, handler)");
    equal(basics.localRefusal.code, "invalid_topic", "an empty topic rejected by the client");
    equal(basics.gatewayRefusal.code, "invalid_topic", "a topic with a control character rejected by the gateway");
    equal(basics.binary, [{ topic: "bin", len: 256, ok: true }, { topic: "bin", len: 10, ok: true }], "binary publishes (Uint8Array, Blob)");
    check(Number.isInteger(basics.unsubscribe.id), "unsubscribe acked");
    equal(basics.handledAfter, 1, "messages after unsubscribe");
    equal(basics.topics, ["bin", "news"], "client.topics");
    check(basics.moduleImport, "import('/client.js') defines WsgateClient");
    note("subscribe/publish/unsubscribe promises resolve on acks; client and gateway refusals reject with their codes; JSON and binary (bytes, Blob) messages as events; import() works");

    // in a Worker, with importScripts
    const worker = await page.evaluate(async (base) => {
      const code = `importScripts(${JSON.stringify(base + "/client.js")});
        onmessage = async (e) => {
          try {
            const c = new WsgateClient(e.data.replace(/^http/, "ws") + "/ws");
            const got = new Promise((r) => c.on("message", r));
            await c.subscribe("from-worker");
            await c.publish("from-worker", { worker: true });
            postMessage({ ok: await got });
            c.close();
          } catch (err) { postMessage({ error: String(err) }); }
        };`;
      const w = new Worker(URL.createObjectURL(new Blob([code], { type: "text/javascript" })));
      const answer = await new Promise((resolve, reject) => {
        w.onmessage = (e) => resolve(e.data);
        w.onerror = (e) => reject(new Error("worker: " + e.message));
        setTimeout(() => reject(new Error("no answer from the worker")), 10000);
        w.postMessage(base);
      });
      w.terminate();
      return answer;
    }, url);
    equal(worker, { ok: { topic: "from-worker", data: { worker: true }, binary: false } }, "client.js in a Worker");
    note("client.js in a dedicated Worker (importScripts): subscribe, publish, message");

    // a request pending when the connection drops is rejected
    await gateway.stop();
    await page.evaluate(() => {
      self.pending = client.publish("news", { n: 2 }).then(
        () => ({ resolved: true }),
        (e) => ({ code: e.code }),
      );
    });
    await sleep(200);
    const addr = gateway.addr;
    await gateway.kill();
    const pending = await page.evaluate(() => self.pending);
    equal(pending, { code: "disconnected" }, "a publish pending when the gateway died: " + JSON.stringify(await page.evaluate(() => events)));
    // let it retry against nothing for a while, then start a gateway on the same port
    await until("reconnect attempts", () => page.evaluate(() => events.filter((e) => e.type === "reconnecting").length >= 2), 5000);
    gateway = await OwnGateway.start(bin, ["--listen", addr, "--workers", "1"], log);
    await until("the reconnect event", () => page.evaluate(() => events.some((e) => e.type === "reconnect")), 5000);
    // the client subscribes again on open: a publish from a backend reaches it
    let delivered = 0;
    await until("the resubscription (POST /publish delivered to 1)", async () => {
      const r = await fetch(`${url}/publish/news`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: '{"after":"restart"}',
        signal: AbortSignal.timeout(2000),
      });
      delivered = (await r.json()).delivered;
      return delivered === 1;
    }, 5000, 100);
    const after = await page.evaluate(async () => {
      const m = await waitMessage((m) => m.topic === "news" && m.data && m.data.after === "restart");
      const ack = await client.publish("news", { n: 3 });
      const own = await waitMessage((m) => m.topic === "news" && m.data && m.data.n === 3);
      const summary = events.map((e) => e.type);
      client.close();
      const closed = await client.once("close");
      const late = await client.publish("news", 4).then(() => "resolved", (e) => e.code);
      return { m, ack, own, summary, closed, late, reconnecting: events.filter((e) => e.type === "reconnecting").map((e) => e.delay) };
    });
    check(Number.isInteger(after.ack.id), "publish after the reconnect acked");
    equal(after.m.data, { after: "restart" }, "message published after the restart");
    equal(after.closed.willReconnect, false, "close() does not reconnect");
    equal(after.late, "closed", "a publish after close()");
    check(after.summary.includes("reconnect"), "reconnect event");
    const delays = after.reconnecting;
    check(delays.every((d) => d >= 0 && d <= 800), `backoff delays within max: ${delays}`);
    note(`gateway stopped then killed: pending publish rejected "disconnected"; ${delays.length} retries with backoff ${delays.join(", ")} ms; a gateway on the same port: reconnected, resubscribed, got the message published after; close() stops it`);
    check(b.errors.length === 0, "page errors: " + b.errors.join("; "));
  } catch (e) {
    e.message += "\n---- wsgate log ----\n" + log.join("\n");
    throw e;
  } finally {
    await b.close();
    await gateway.kill();
  }
}
