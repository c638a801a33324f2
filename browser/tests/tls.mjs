// Chromium over TLS: wss:// from a page and from a dedicated Worker, and the dashboard over
// https://, against a gateway started with --tls-cert/--tls-key (a certificate for localhost
// signed by a CA made at test time). Chromium is told to accept that one certificate's key,
// nothing more (--ignore-certificate-errors-spki-list=<base64 SHA-256 of its
// SubjectPublicKeyInfo>); a second TLS gateway with another key shows that verification is
// still on: its page and its wss:// are refused.
//
// From https://localhost:PORT/healthz (a secure context) and from a Worker it starts: text
// (multi-byte UTF-8, up to 1 MB) and binary (up to 3 MiB) echoed byte for byte; pub/sub between
// two sockets both ways (text with its ack, binary byte for byte); a publish from the Worker
// reaching a socket of the page and one from the page reaching the Worker; clean closes (1000).
// The dashboard at https://localhost:PORT/ renders (title, the first /stats update) and its
// console's own socket connects over wss:// and carries a message published from the page.

import { launch, check, equal, until, PAGE_HELPERS } from "../lib.mjs";

/**
 * Runs in the page or in the Worker (PAGE_HELPERS installed): echo, pub/sub, closes, checked
 * where they arrive. Self-contained apart from the helpers: its source is sent to the Worker.
 * `tag` keeps the topics of the page and the Worker apart.
 */
async function exchange(base, tag) {
  const out = { tag, results: [], urls: [], secure: self.isSecureContext, origin: self.origin };
  const sameBytes = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  const result = (what, ok, detail = "") => out.results.push({ what, ok, detail: String(detail) });

  // echo: text and binary, both ways through the TLS connection
  const echo = await wsOpen(wsUrl(base, "/echo"));
  out.urls.push(echo.url);
  for (const n of [1, 1000, 70_000, 1_000_000]) {
    const text = genText(n); // whole characters, at least n bytes of UTF-8
    echo.send(text);
    const back = await wsNext(echo, 20000);
    result(`text echo of ${new TextEncoder().encode(text).length} bytes`, back === text, typeof back);
  }
  for (const n of [1, 125, 126, 65_536, 1 << 20, 3 << 20]) {
    const bytes = genBytes(n, n + tag.length);
    echo.send(bytes);
    const back = await wsNext(echo, 20000);
    const got = new Uint8Array(back);
    result(`binary echo of ${n} bytes`, back instanceof ArrayBuffer && sameBytes(got, bytes), `${got.length} bytes`);
  }
  echo.close(1000, "done");
  const echoClosed = await wsClosed(echo);
  result("echo socket closes cleanly", echoClosed.code === 1000 && echoClosed.wasClean, JSON.stringify(echoClosed));

  // pub/sub between two sockets of this side, both ways
  const a = await wsOpen(wsUrl(base, `/ws?subscribe=tls-${tag}-a`));
  const b = await wsOpen(wsUrl(base, "/ws"));
  out.urls.push(a.url, b.url);
  b.send(JSON.stringify({ type: "subscribe", topic: `tls-${tag}-b`, id: 1 }));
  const subAck = await wsNext(b);
  result("subscribe ack", subAck === '{"type":"ack","id":1}', subAck);
  const data = '{"x":[1,2.50,"é ✓ 😀"]}';
  b.send(`{"type":"publish","topic":"tls-${tag}-a","data":${data},"id":2}`);
  const pubAck = await wsNext(b);
  result("publish ack", pubAck === '{"type":"ack","id":2}', pubAck);
  const delivered = await wsNext(a);
  result("text delivery, data verbatim", delivered === `{"type":"message","topic":"tls-${tag}-a","data":${data}}`, delivered);
  const frame = withTopic(`tls-${tag}-b`, genBytes(200_000, 7));
  a.send(frame);
  const binary = new Uint8Array(await wsNext(b));
  result("binary delivery, byte for byte", sameBytes(binary, frame), `${binary.length} bytes`);
  for (const ws of [a, b]) ws.close(1000);
  for (const ws of [a, b]) {
    const c = await wsClosed(ws);
    result("pub/sub socket closes cleanly", c.code === 1000 && c.wasClean, JSON.stringify(c));
  }
  return out;
}

/**
 * The Worker's script: PAGE_HELPERS, exchange(), and commands from the page: `exchange`,
 * `listen` (a socket subscribed to a topic), `publish` (to a topic, acked), `next` (the
 * listener's next message). Each answers {ok} or {error}.
 */
const WORKER_SRC = `
const commands = {
  exchange: (base, tag) => exchange(base, tag),
  listen: async (base, topic) => { self.listener = await wsOpen(wsUrl(base, "/ws?subscribe=" + topic)); return self.listener.url; },
  publish: async (base, topic, data) => {
    const ws = await wsOpen(wsUrl(base, "/ws"));
    ws.send(JSON.stringify({ type: "publish", topic, data, id: 7 }));
    const ack = await wsNext(ws);
    ws.close(1000);
    return ack;
  },
  next: () => wsNext(self.listener),
};
onmessage = async (e) => {
  const [command, ...args] = e.data;
  try { postMessage({ ok: await commands[command](...args), inWorker: typeof document === "undefined" }); }
  catch (err) { postMessage({ error: command + ": " + String(err && err.stack || err) }); }
};`;

export async function run({ url, spki, untrusted, note }) {
  const origin = new URL(url);
  check(origin.protocol === "https:" && origin.hostname === "localhost", `--url https://localhost:PORT, not ${url}`);
  const b = await launch({ args: [`--ignore-certificate-errors-spki-list=${spki}`] });
  try {
    const { page, context } = b;

    // a plain page of the gateway's origin, over https
    const response = await page.goto(url + "/healthz");
    equal(response.status(), 200, "GET /healthz over https");
    const security = await response.securityDetails();
    check(security, "no security details for an https:// page");
    equal(security.subjectName, "wsgate test server", "the certificate Chromium got");
    note(`${url}: ${security.protocol}, certificate of ${security.subjectName} issued by ${security.issuer}`);
    await page.addScriptTag({ content: PAGE_HELPERS });

    const wss = `wss://localhost:${origin.port}/`;
    const verify = (where, r) => {
      equal([r.origin, r.secure], [url, true], `${where}: origin, secure context`);
      for (const u of r.urls) check(u.startsWith(wss), `${where}: socket URL ${u}`);
      const failed = r.results.filter((x) => !x.ok);
      check(failed.length === 0, `${where}: ${failed.map((x) => `${x.what} (${x.detail.slice(0, 120)})`).join("; ")}`);
      equal(r.results.length, 17, `${where}: checks run`);
      note(`${where}: ${r.results.length} checks over wss (echo of text up to 1 MB and binary up to 3 MiB, pub/sub both ways, clean closes)`);
    };

    // in the page
    const inPage = await page.evaluate(
      async ({ src, args }) => new Function(`return (${src})`)()(...args),
      { src: exchange.toString(), args: [url, "page"] },
    );
    verify("page", inPage);

    // in a dedicated Worker
    await page.evaluate(({ helpers, src, worker }) => {
      const code = `${helpers}\nconst exchange = ${src};\n${worker}`;
      self.tlsWorker = new Worker(URL.createObjectURL(new Blob([code], { type: "text/javascript" })));
      self.ask = (...message) => new Promise((resolve, reject) => {
        self.tlsWorker.onmessage = (e) => resolve(e.data);
        self.tlsWorker.onerror = (e) => reject(new Error("worker error: " + e.message));
        self.tlsWorker.postMessage(message);
      });
    }, { helpers: PAGE_HELPERS, src: exchange.toString(), worker: WORKER_SRC });
    const ask = async (...message) => {
      const answer = await page.evaluate((m) => self.ask(...m), message);
      check(!answer.error, "worker: " + answer.error);
      check(answer.inWorker, "ran in a dedicated Worker");
      return answer.ok;
    };
    verify("dedicated Worker", await ask("exchange", url, "worker"));

    // across: the Worker publishes to a socket of the page, the page to a socket of the Worker
    const pageListener = await page.evaluate(async (base) => {
      self.listener = await wsOpen(wsUrl(base, "/ws?subscribe=tls-to-page"));
      return self.listener.url;
    }, url);
    equal(pageListener, `${wss}ws?subscribe=tls-to-page`, "the page's socket URL");
    equal(await ask("listen", url, "tls-to-worker"), `${wss}ws?subscribe=tls-to-worker`, "the Worker's socket URL");
    equal(await ask("publish", url, "tls-to-page", { from: "worker" }), '{"type":"ack","id":7}', "the Worker's publish ack");
    equal(await page.evaluate(() => wsNext(self.listener)), '{"type":"message","topic":"tls-to-page","data":{"from":"worker"}}', "the Worker's publish, at the page");
    const pageAck = await page.evaluate(() => {
      self.listener.send(JSON.stringify({ type: "publish", topic: "tls-to-worker", data: { from: "page" }, id: 9 }));
      return wsNext(self.listener);
    });
    equal(pageAck, '{"type":"ack","id":9}', "the page's publish ack");
    equal(await ask("next"), '{"type":"message","topic":"tls-to-worker","data":{"from":"page"}}', "the page's publish, at the Worker");
    note("Worker -> page and page -> Worker publishes delivered over wss");

    // the dashboard over https; its console's socket over wss
    const dash = await context.newPage();
    const sockets = [];
    dash.on("websocket", (ws) => sockets.push(ws.url()));
    const dashErrors = [];
    dash.on("pageerror", (e) => dashErrors.push(String(e)));
    const dashResponse = await dash.goto(url + "/");
    equal(dashResponse.status(), 200, "GET / over https");
    equal(await dash.title(), "wsgate dashboard", "the dashboard's title");
    await until("the dashboard's first update from /stats", () => dash.evaluate(() => Number(document.body.dataset.updates) >= 1), 10_000);
    await until("the console's socket", () => dash.evaluate(() => document.querySelector("#console-state").dataset.state === "connected"), 10_000);
    const consoleUrl = await dash.evaluate(() => window.wsgateConsole.url);
    equal(consoleUrl, `wss://localhost:${origin.port}/ws`, "the console's socket URL");
    check(sockets.includes(consoleUrl), `the dashboard's sockets: ${JSON.stringify(sockets)}`);
    // the console subscribes, a socket of the first page publishes, the console shows it
    await dash.fill("#console-topic", "tls-dash");
    await dash.click("#console-subscribe");
    await dash.waitForSelector('#console-topics .chip[data-topic="tls-dash"]', { timeout: 10_000 });
    const dashAck = await page.evaluate(async () => {
      self.listener.send(JSON.stringify({ type: "publish", topic: "tls-dash", data: { over: "wss", text: "ünïcødé ✓" }, id: 5 }));
      return wsNext(self.listener);
    });
    equal(dashAck, '{"type":"ack","id":5}', "the publish to the console's topic acked");
    await dash.waitForSelector('#console-log .entry.message[data-topic="tls-dash"]', { timeout: 10_000 });
    const shown = await dash.evaluate(() =>
      [...document.querySelectorAll('#console-log .entry.message[data-topic="tls-dash"] .body')].map((e) => e.textContent));
    equal(shown, ['{"over":"wss","text":"ünïcødé ✓"}'], "the message in the dashboard's console");
    const connections = await dash.evaluate(() => document.querySelector('.card[data-stat="connections_open"] .value').dataset.value);
    check(Number(connections) >= 1, `connections shown: ${connections}`);
    check(dashErrors.length === 0, "dashboard page errors: " + dashErrors.join("; "));
    note(`dashboard: "${await dash.title()}" over https, its console on ${consoleUrl} got a publish from the page`);

    // verification is still on: another key is refused, for a page and for a socket
    let refused = null;
    try {
      await dash.goto(untrusted + "/healthz");
    } catch (e) {
      refused = String(e.message || e);
    }
    check(refused && /ERR_CERT_AUTHORITY_INVALID/.test(refused), `the page of a gateway with another key: ${refused || "loaded"}`);
    const socketRefused = await page.evaluate(async (other) => {
      try {
        const ws = await wsOpen(wsUrl(other, "/echo"));
        ws.close();
        return false;
      } catch (e) {
        return String(e.message || e);
      }
    }, untrusted);
    check(socketRefused && /socket error before open/.test(socketRefused), `wss:// to a gateway with another key: ${socketRefused || "opened"}`);
    note("a gateway with another key: page refused (ERR_CERT_AUTHORITY_INVALID), wss:// refused");

    await page.evaluate(async () => {
      self.listener.close(1000);
      self.tlsWorker.terminate();
    });
    check(b.errors.length === 0, "page errors: " + b.errors.join("; "));
  } finally {
    await b.close();
  }
}
