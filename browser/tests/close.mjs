// Closes the gateway starts, as the page sees them: 1009 (a message over --max-message-size,
// here 64 KiB) with its reason, counted in /metrics; then 1001 "server draining" after SIGTERM
// (--drain-grace 1s), with /readyz answering 503 and new sockets refused meanwhile.

import { launch, gatewayPage, check, equal, metric } from "../lib.mjs";

export async function run({ url, pid, note }) {
  const b = await launch();
  try {
    const { page } = b;
    await gatewayPage(page, url);

    const tooBig = await page.evaluate(async (base) => {
      const echo = await wsOpen(wsUrl(base, "/echo"));
      echo.send(new Uint8Array(100 * 1024));
      const pubsub = await wsOpen(wsUrl(base, "/ws"));
      pubsub.send(JSON.stringify({ type: "publish", topic: "big", data: "x".repeat(70 * 1024) }));
      return { echo: await wsClosed(echo), pubsub: await wsClosed(pubsub) };
    }, url);
    for (const [path, c] of Object.entries(tooBig)) {
      equal(c.code, 1009, `close code after a message over the limit on ${path}`);
      check(c.reason.length > 0, `a reason with 1009 on ${path}`);
    }
    const sent1009 = await metric(url, 'wsgate_closes_sent_total{code="1009"}');
    equal(sent1009, 2, "wsgate_closes_sent_total{code=\"1009\"}");
    note(`100 KiB binary on /echo and 70 KiB text on /ws over a 64 KiB limit: the page saw 1009 ${JSON.stringify(tooBig.echo.reason)}; /metrics counts 2 closes 1009`);

    // drain
    await page.evaluate(async (base) => {
      self.draining = [await wsOpen(wsUrl(base, "/ws?subscribe=news")), await wsOpen(wsUrl(base, "/echo"))];
    }, url);
    process.kill(pid, "SIGTERM");
    const drain = await page.evaluate(async (base) => {
      const t0 = performance.now();
      let ready;
      for (;;) {
        ready = (await fetch("/readyz", { cache: "no-store" })).status;
        if (ready === 503 || performance.now() - t0 > 900) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      // a new socket is refused while draining: the handshake fails, close 1006
      const refused = await new Promise((resolve) => {
        const ws = new WebSocket(wsUrl(base, "/ws"));
        ws.onopen = () => resolve({ opened: true });
        ws.onclose = (e) => resolve({ opened: false, code: e.code });
      });
      const closes = await Promise.all(self.draining.map((ws) => wsClosed(ws, 10000)));
      return { ready, refused, closes, ms: performance.now() - t0 };
    }, url);
    equal(drain.ready, 503, "/readyz while draining");
    equal(drain.refused, { opened: false, code: 1006 }, "a new socket while draining");
    for (const c of drain.closes) {
      equal([c.code, c.reason], [1001, "server draining"], "close on drain");
    }
    note(`SIGTERM: /readyz 503, a new socket refused (1006 in the page), open sockets closed 1001 "server draining" after ${drain.ms.toFixed(0)} ms`);
    check(b.errors.length === 0, "page errors: " + b.errors.join("; "));
  } finally {
    await b.close();
  }
}
