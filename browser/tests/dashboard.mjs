// The dashboard at / against what the test did: sockets subscribed to known topics, a known
// number of publishes at a steady rate, one slow consumer closed by the gateway; the numbers the
// page shows are read from the DOM and compared. Then the page's console subscribes and
// publishes, and a screenshot is saved for a person to look at.

import net from "node:net";
import fs from "node:fs";
import path from "node:path";
import { launch, gatewayPage, check, equal, until, sleep, getJson } from "../lib.mjs";

const SUBSCRIBERS = 5; // of dash-test
const OTHERS = 2; // of dash-other
const PUBLISHES = 60; // to dash-test, at about 30 a second

/** A subscriber that never reads: a raw upgrade, then nothing (Node does not read a socket
 * with no 'data' listener beyond its small buffer). */
function slowSubscriber(url, topic) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: hostname, port: Number(port) }, () => {
      s.write(
        `GET /ws?subscribe=${topic} HTTP/1.1\r\nHost: ${hostname}\r\nUpgrade: websocket\r\n` +
          "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      );
      resolve(s);
    });
    s.on("error", reject);
    s.setTimeout(60_000, () => s.destroy());
  });
}

/** What the dashboard shows now, read from its DOM. */
function readDashboard(page) {
  return page.evaluate(() => {
    const num = (el) => (el && el.dataset.value !== "" ? Number(el.dataset.value) : null);
    const card = (stat) => num(document.querySelector(`.card[data-stat="${stat}"] .value`));
    const sub = (stat) => num(document.querySelector(`.sub[data-stat="${stat}"]`));
    const workers = [...document.querySelectorAll("#workers tbody tr[data-worker]")].map((tr) => {
      const row = { worker: Number(tr.dataset.worker) };
      for (const td of tr.querySelectorAll("td[data-field]")) row[td.dataset.field] = num(td);
      return row;
    });
    const topics = Object.fromEntries(
      [...document.querySelectorAll("#topics tbody tr[data-topic]")].map((tr) => [
        tr.dataset.topic,
        num(tr.querySelector('td[data-field="subscribers"]')),
      ]),
    );
    return {
      updates: Number(document.body.dataset.updates),
      status: document.querySelector("#status").dataset.state,
      connections: card("connections_open"),
      messagesInRate: card("messages_in_rate"),
      messagesOutRate: card("messages_out_rate"),
      bytesInRate: card("bytes_in_rate"),
      bytesOutRate: card("bytes_out_rate"),
      publishesRate: card("publishes_rate"),
      slow: card("slow_consumer_closes"),
      topicsTotal: card("topics_total"),
      messagesIn: sub("messages_in"),
      publishes: sub("publishes"),
      bytesIn: sub("bytes_in"),
      workers,
      topics,
      closes: document.querySelector("#closes").textContent,
      text: {
        connections: document.querySelector('.card[data-stat="connections_open"] .value').textContent,
        slow: document.querySelector('.card[data-stat="slow_consumer_closes"] .value').textContent,
      },
    };
  });
}

export async function run({ url, screenshot, note }) {
  const b = await launch({ viewport: { width: 1280, height: 900 } });
  const raw = [];
  try {
    const { page, context } = b;
    await page.goto(url + "/");
    await until("the first update", async () => (await readDashboard(page)).updates >= 1, 5000);
    await until("the console's socket", () => page.evaluate(() => document.querySelector("#console-state").dataset.state === "connected"), 5000);
    const initial = await getJson(url + "/stats");

    // a second page of the same origin does what the dashboard is to show
    const actor = await context.newPage();
    await gatewayPage(actor, url);
    await actor.evaluate(async ({ base, subscribers, others }) => {
      self.subs = [];
      for (let i = 0; i < subscribers; i++) subs.push(await wsOpen(wsUrl(base, "/ws?subscribe=dash-test")));
      for (let i = 0; i < others; i++) subs.push(await wsOpen(wsUrl(base, "/ws?subscribe=dash-other")));
      self.pub = await wsOpen(wsUrl(base, "/ws"));
    }, { base: url, subscribers: SUBSCRIBERS, others: OTHERS });

    // steady publishing; meanwhile watch the rates on the dashboard
    const publishing = actor.evaluate(async (n) => {
      for (let i = 0; i < n; i++) {
        pub.send(JSON.stringify({ type: "publish", topic: "dash-test", data: { i }, id: i + 1 }));
        await new Promise((r) => setTimeout(r, 33));
      }
      // every subscriber got every message
      const want = n;
      const t0 = Date.now();
      while (subs.slice(0, 5).some((ws) => ws.inbox.length < want) && Date.now() - t0 < 10000) {
        await new Promise((r) => setTimeout(r, 20));
      }
      return subs.map((ws) => ws.inbox.length);
    }, PUBLISHES);
    let peak = { in: 0, out: 0, publishes: 0, deliveries: 0 };
    let done = false;
    publishing.finally(() => (done = true));
    while (!done) {
      const d = await readDashboard(page);
      const total = d.workers.reduce((s, w) => s + (w.fanout_deliveries_rate || 0), 0);
      peak = {
        in: Math.max(peak.in, d.messagesInRate || 0),
        out: Math.max(peak.out, d.messagesOutRate || 0),
        publishes: Math.max(peak.publishes, d.publishesRate || 0),
        deliveries: Math.max(peak.deliveries, total),
      };
      await sleep(200);
    }
    const received = await publishing;
    equal(received, [...Array(SUBSCRIBERS).fill(PUBLISHES), ...Array(OTHERS).fill(0)], "messages each subscriber got");

    // one slow consumer, closed by the gateway (--outbox-limit 1MiB): 512 KiB publishes to it
    raw.push(await slowSubscriber(url, "dash-slow"));
    await until("the slow subscriber", async () => (await getJson(url + "/stats")).topics.some((t) => t.topic === "dash-slow"), 5000);
    let bigPublishes = 0;
    for (let round = 0; round < 16; round++) {
      const stats = await getJson(url + "/stats");
      if (stats.totals.slow_consumer_closes - initial.totals.slow_consumer_closes >= 1) break;
      await actor.evaluate(async () => {
        const chunk = withTopic("dash-slow", new Uint8Array(512 * 1024));
        for (let i = 0; i < 8; i++) pub.send(chunk);
        while (pub.bufferedAmount > 0) await new Promise((r) => setTimeout(r, 10));
      });
      bigPublishes += 8;
      await sleep(100);
    }
    await until("the slow-consumer close", async () => (await getJson(url + "/stats")).totals.slow_consumer_closes > initial.totals.slow_consumer_closes, 5000);

    // the dashboard catches up: wait for two updates after everything, then compare
    const stats = await getJson(url + "/stats");
    const mark = (await readDashboard(page)).updates;
    await until("two more dashboard updates", async () => (await readDashboard(page)).updates >= mark + 2, 5000);
    const d = await readDashboard(page);
    equal(d.status, "live", "status");
    equal(d.topics["dash-test"], SUBSCRIBERS, "subscribers of dash-test shown");
    equal(d.topics["dash-other"], OTHERS, "subscribers of dash-other shown");
    equal(d.topics["dash-slow"], undefined, "dash-slow gone once its only subscriber was closed");
    equal(d.slow - initial.totals.slow_consumer_closes, 1, "slow-consumer closes shown");
    equal(d.text.slow, String(stats.totals.slow_consumer_closes), "slow-consumer closes as text");
    check(/1013 × 1/.test(d.closes), `close codes shown: ${d.closes}`);
    const ours = SUBSCRIBERS + OTHERS + 1 + 1; // the actor's sockets, the console's
    check(d.connections >= ours, `connections shown ${d.connections} >= ${ours}`);
    equal(d.workers.length, 2, "worker rows (--workers 2)");
    equal(d.workers.reduce((s, w) => s + w.connections_open, 0), d.connections, "per-worker connections add up to the total");
    check(d.publishes - initial.totals.publishes >= PUBLISHES + bigPublishes, `publishes shown ${d.publishes} >= ${PUBLISHES + bigPublishes} more than at the start (${initial.totals.publishes})`);
    check(d.messagesIn - initial.totals.messages_in >= PUBLISHES + bigPublishes, `messages in shown ${d.messagesIn}`);
    check(d.bytesIn - initial.totals.bytes_in >= bigPublishes * 512 * 1024, `bytes in shown ${d.bytesIn}`);
    check(peak.in >= 10 && peak.publishes >= 10, `peak rates shown while publishing ~30/s: in ${peak.in}/s, publishes ${peak.publishes}/s`);
    check(peak.deliveries >= 5 * 10, `peak deliveries shown: ${peak.deliveries}/s for 5 subscribers`);
    note(`dashboard showed dash-test ${d.topics["dash-test"]} subscribers, dash-other ${d.topics["dash-other"]}, ${d.connections} connections over ${d.workers.length} workers, 1 slow-consumer close (${bigPublishes} x 512 KiB published), peaks ${peak.in.toFixed(1)} msg/s in, ${peak.publishes.toFixed(1)} publishes/s, ${peak.deliveries.toFixed(1)} deliveries/s while the test published ${PUBLISHES} at ~30/s`);

    // the console: subscribe, publish, see it; and a message from elsewhere
    await page.fill("#console-topic", "dash-console");
    await page.click("#console-subscribe");
    await page.waitForSelector('#console-topics .chip[data-topic="dash-console"]', { timeout: 5000 });
    await page.fill("#console-data", '{"from": "console", "n": 42}');
    await page.click("#console-publish");
    await page.waitForSelector('#console-log .entry.message[data-topic="dash-console"]', { timeout: 5000 });
    await actor.evaluate(() => pub.send(JSON.stringify({ type: "publish", topic: "dash-console", data: { from: "another socket", text: "ünïcødé ✓" } })));
    await until("the other socket's message in the console", () =>
      page.evaluate(() => [...document.querySelectorAll('#console-log .entry.message[data-topic="dash-console"] .body')].map((e) => e.textContent)), 5000);
    const log = await until("both console messages", async () => {
      const l = await page.evaluate(() => [...document.querySelectorAll('#console-log .entry.message[data-topic="dash-console"] .body')].map((e) => e.textContent));
      return l.length >= 2 && l;
    }, 5000);
    equal(log, ['{"from":"console","n":42}', '{"from":"another socket","text":"ünïcødé ✓"}'], "messages in the console");
    const mark2 = (await readDashboard(page)).updates;
    await until("the console's topic in the table", async () => {
      const d2 = await readDashboard(page);
      return d2.updates > mark2 && d2.topics["dash-console"] === 1;
    }, 5000);
    note("console: subscribed to dash-console, published {\"from\":\"console\",\"n\":42}, saw it and another socket's message; the topic table shows dash-console with 1 subscriber");

    fs.mkdirSync(path.dirname(screenshot), { recursive: true });
    await page.bringToFront();
    await page.screenshot({ path: screenshot, fullPage: true });
    note(`screenshot: ${screenshot}`);
    check(b.errors.length === 0, "page errors: " + b.errors.join("; "));
  } finally {
    for (const s of raw) s.destroy();
    await b.close();
  }
}
