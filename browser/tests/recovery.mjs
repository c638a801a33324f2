// /client.js recovering what it missed, in the browser: a gateway with a [[history]] rule for
// chat.*; the page's client reaches it through a TCP relay of this test, which cuts the
// connection (the page sees 1006, as after a network drop) and refuses new ones while messages
// are published by POST /publish. Once the relay lets it through again, the client subscribes
// with recover:{offset,epoch} and must get exactly the missed messages, in order, no
// duplicate, then a `recovered` event with the right count; a second drop with a publisher
// racing the reconnect must leave the offsets contiguous. Duplicate and skipped offsets (fed to
// the client's message handler) are dropped and reported as a "jump" gap. Then the gateway is
// killed and started again on the same port (a new epoch): a `gap` event with reason "epoch",
// and the new stream's offsets accepted. /stats and the dashboard's history card are checked
// against the recoveries. This test starts its own gateways (--bin).

import net from "node:net";
import { launch, check, equal, until, sleep, getJson, OwnGateway } from "../lib.mjs";

const HISTORY = 'topics = "chat.*", size = 1000, ttl = "5m"';
const MISSED = 20; // published while the page is cut off, first drop

/**
 * A TCP relay on 127.0.0.1 to `addr`: cut() destroys every connection through it; while
 * `held`, new connections are closed at once (the client's reconnects fail).
 */
async function cuttingRelay(addr) {
  const i = addr.lastIndexOf(":");
  const [host, port] = [addr.slice(0, i), Number(addr.slice(i + 1))];
  const relay = { held: false, sockets: new Set(), accepted: 0, refused: 0 };
  const server = net.createServer((client) => {
    if (relay.held) {
      relay.refused += 1;
      client.destroy();
      return;
    }
    relay.accepted += 1;
    const gateway = net.connect(port, host);
    const end = () => {
      client.destroy();
      gateway.destroy();
      relay.sockets.delete(client);
      relay.sockets.delete(gateway);
    };
    for (const s of [client, gateway]) {
      relay.sockets.add(s);
      s.on("error", end);
      s.on("close", end);
    }
    client.pipe(gateway);
    gateway.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  relay.port = server.address().port;
  relay.cut = () => {
    for (const s of relay.sockets) s.destroy();
    relay.sockets.clear();
  };
  relay.close = () => {
    relay.cut();
    server.close();
  };
  return relay;
}

/** POST /publish/{topic} with a JSON body; returns the gateway's answer. */
async function publish(url, topic, data) {
  const r = await fetch(`${url}/publish/${topic}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(data),
    signal: AbortSignal.timeout(5000),
  });
  if (!r.ok) throw new Error(`POST /publish/${topic}: ${r.status} ${await r.text()}`);
  return r.json();
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

export async function run({ bin, note }) {
  const log = [];
  const args = (listen) => ["--listen", listen, "--workers", "2", "--history", HISTORY];
  let gateway = await OwnGateway.start(bin, args("127.0.0.1:0"), log);
  const url = `http://${gateway.addr}`;
  const relay = await cuttingRelay(gateway.addr);
  const b = await launch();
  try {
    const { page } = b;
    await page.goto(url + "/healthz");
    await page.addScriptTag({ url: "/client.js" });

    // ---- subscribed, live deliveries with offsets --------------------------------------------
    const start = await page.evaluate(async (wsUrl) => {
      const events = (self.events = []);
      const client = (self.client = new WsgateClient(wsUrl, {
        reconnect: { min: 100, max: 400, factor: 2, jitter: 0.3 },
        timeout: 5000,
      }));
      for (const type of ["open", "close", "reconnect", "reconnecting", "error", "recovered", "gap"]) {
        client.on(type, (d) => {
          const e = { type, ...d };
          if (d && d.error) e.error = String(d.error);
          events.push(e);
        });
      }
      const messages = (self.messages = []);
      client.on("message", (m) => messages.push(m));
      self.of = (topic) => messages.filter((m) => m.topic === topic);
      self.eventsOf = (type, topic) => events.filter((e) => e.type === type && (!topic || e.topic === topic));
      await client.once("open");
      const room = await client.subscribe("chat.room");
      const lobby = await client.subscribe("chat.lobby");
      const news = await client.subscribe("news");
      return { room, lobby, news, position: client.position("chat.room"), newsPosition: client.position("news") ?? null };
    }, `ws://127.0.0.1:${relay.port}/ws`);
    const epoch = start.room.epoch;
    check(typeof epoch === "string" && epoch.length > 0, `the ack of chat.room has an epoch: ${JSON.stringify(start.room)}`);
    equal({ ...start.room, id: 0 }, { id: 0, topic: "chat.room", offset: 0, epoch }, "subscribe resolves with the history ack");
    equal(start.position, { offset: 0, epoch }, "position(chat.room) after the ack");
    equal(Object.keys(start.news), ["id"], "a topic without history is acked as before");
    equal(start.newsPosition, null, "position(news): no history");
    for (const seq of range(1, 3)) await publish(url, "chat.room", { seq });
    await publish(url, "news", { n: 1 });
    // (a history topic whose history is empty is forgotten with its last subscriber, and comes
    // back in a new epoch: chat.lobby keeps a message, so that it is the same stream after the
    // drop)
    await publish(url, "chat.lobby", { lobby: 1 });
    await until("3 chat.room messages, 1 chat.lobby and 1 news", () =>
      page.evaluate(() => of("chat.room").length === 3 && of("chat.lobby").length === 1 && of("news").length === 1), 5000);
    const live = await page.evaluate(() => ({
      room: of("chat.room"),
      news: of("news"),
      position: client.position("chat.room"),
    }));
    equal(live.room, range(1, 3).map((seq) => ({ topic: "chat.room", data: { seq }, binary: false, offset: seq })), "live deliveries with offsets");
    equal(live.news, [{ topic: "news", data: { n: 1 }, binary: false }], "a delivery without history has no offset");
    equal(live.position, { offset: 3, epoch }, "position(chat.room) after 3 messages");
    note(`chat.room acked at offset 0 of epoch ${epoch}; offsets 1..3 delivered; news without offsets`);

    // ---- first drop: 20 messages missed, recovered exactly ------------------------------------
    // a failed reconnect is a close event too: each drop waits for one more than before
    const closes = () => page.evaluate(() => eventsOf("close").length);
    let t0 = Date.now();
    relay.held = true;
    relay.cut();
    await until("the close event", async () => (await closes()) === 1, 5000);
    for (const seq of range(4, 3 + MISSED)) await publish(url, "chat.room", { seq });
    await publish(url, "news", { n: 2 }); // lost: news keeps no history
    await until("failed reconnects while the relay holds", () =>
      page.evaluate(() => eventsOf("reconnecting").length >= 2), 5000);
    relay.held = false;
    await until("recovered events of chat.room and chat.lobby", () =>
      page.evaluate(() => eventsOf("recovered").length === 2), 5000);
    const recoveredMs = Date.now() - t0;
    await publish(url, "chat.room", { seq: 4 + MISSED });
    await until("the live message after the recovery", () =>
      page.evaluate((n) => of("chat.room").length === n, 4 + MISSED), 5000);
    const first = await page.evaluate(() => ({
      room: of("chat.room").map((m) => [m.offset, m.data.seq]),
      news: of("news").length,
      recovered: eventsOf("recovered").map(({ type, ...d }) => d),
      gaps: eventsOf("gap"),
      close: eventsOf("close")[0].code,
      duplicates: client.duplicates,
      position: client.position("chat.room"),
    }));
    equal(first.close, 1006, "the page saw the drop as an abnormal close");
    equal(first.room, range(1, 4 + MISSED).map((n) => [n, n]), "chat.room: every offset once, in order, the missed ones included");
    equal(
      first.recovered.sort((a, b) => a.topic.localeCompare(b.topic)),
      [
        { topic: "chat.lobby", from: 1, to: 1, count: 0 },
        { topic: "chat.room", from: 3, to: 3 + MISSED, count: MISSED },
      ],
      "recovered events",
    );
    equal(first.gaps, [], "no gap event");
    equal(first.duplicates, 0, "no duplicate delivery");
    equal(first.news, 1, "news (no history): the message published meanwhile is not recovered");
    equal(first.position, { offset: 4 + MISSED, epoch }, "position(chat.room) after the recovery");
    note(`cut 1006, ${MISSED} published meanwhile: recovered {from 3, to ${3 + MISSED}, count ${MISSED}} ${recoveredMs} ms after the cut, offsets 1..${4 + MISSED} once each in order, no gap, no duplicate`);

    // ---- second drop, a publisher racing the reconnect ----------------------------------------
    let seq = 4 + MISSED;
    let publishing = true;
    const publisher = (async () => {
      // a few hundred a second: the drop stays well within the history's 1000
      while (publishing) {
        await publish(url, "chat.room", { seq: ++seq });
        await sleep(3);
      }
    })();
    try {
      const base = seq;
      await until("some live messages", () => page.evaluate((n) => of("chat.room").length >= n, base + 3), 5000);
      const before = await closes();
      relay.held = true;
      relay.cut();
      await until("the second drop's close event", async () => (await closes()) > before, 5000);
      const cutAt = seq;
      await until("5 publishes while cut off", () => seq >= cutAt + 5, 5000, 5);
      relay.held = false;
      await until("the second recovery of chat.room", () =>
        page.evaluate(() => eventsOf("recovered", "chat.room").length === 2), 5000);
      const after = seq;
      await until("publishes after the recovery", () => seq >= after + 10, 5000, 5);
    } finally {
      publishing = false;
      await publisher;
    }
    await until("every message of the race", () =>
      page.evaluate((n) => of("chat.room").length >= n, seq), 5000);
    const race = await page.evaluate(() => ({
      offsets: of("chat.room").map((m) => m.offset),
      seqs: of("chat.room").map((m) => m.data.seq),
      recovered: eventsOf("recovered", "chat.room")[1],
      gaps: eventsOf("gap").length,
      duplicates: client.duplicates,
    }));
    equal(race.offsets, range(1, seq), "offsets after a drop with a publisher racing the reconnect");
    equal(race.seqs, range(1, seq), "messages in publish order");
    check(race.recovered.count >= 5 && race.recovered.count === race.recovered.to - race.recovered.from,
      `the racing recovery: ${JSON.stringify(race.recovered)}`);
    equal([race.gaps, race.duplicates], [0, 0], "no gap, no duplicate in the race");
    note(`publisher racing a drop: ${seq} messages, offsets contiguous; recovered ${race.recovered.count} (offsets ${race.recovered.from + 1}..${race.recovered.to})`);

    // ---- duplicates and jumps (fed to the client's handler), the gateway's gap notice -------
    await publish(url, "chat.lobby", { lobby: 2 });
    await until("chat.lobby offset 2", () => page.evaluate(() => of("chat.lobby").length === 2), 5000);
    const fed = await page.evaluate(() => {
      const feed = (msg) => client._onMessage({ data: JSON.stringify(msg) });
      const lobbyGaps = () => eventsOf("gap", "chat.lobby").map(({ type, ...d }) => d);
      feed({ type: "message", topic: "chat.lobby", offset: 2, data: { lobby: 2 } });
      feed({ type: "message", topic: "chat.lobby", offset: 1, data: { lobby: 1 } });
      const dup = { duplicates: client.duplicates, delivered: of("chat.lobby").length };
      feed({ type: "message", topic: "chat.lobby", offset: 4, data: { lobby: 4 } });
      const jump = { gaps: lobbyGaps(), last: of("chat.lobby").at(-1), position: client.position("chat.lobby").offset };
      feed({ type: "gap", topic: "chat.lobby" });
      return { dup, jump, gaps: lobbyGaps() };
    });
    equal(fed.dup, { duplicates: 2, delivered: 2 }, "repeated offsets are dropped and counted");
    equal(fed.jump, {
      gaps: [{ topic: "chat.lobby", reason: "jump", last: 2, offset: 4 }],
      last: { topic: "chat.lobby", data: { lobby: 4 }, binary: false, offset: 4 },
      position: 4,
    }, "a skipped offset: a jump gap, the message delivered");
    equal(fed.gaps.at(-1), { topic: "chat.lobby", reason: "gateway" }, "the gateway's gap notice");
    // after the notice the next offset (3, from the gateway) is taken as it comes
    await publish(url, "chat.lobby", { lobby: 3 });
    await until("chat.lobby offset 3 after the notice", () =>
      page.evaluate(() => of("chat.lobby").length === 4), 5000);
    equal(await page.evaluate(() => [of("chat.lobby").at(-1).offset, client.position("chat.lobby").offset, eventsOf("gap").length, client.duplicates]),
      [3, 3, 2, 2], "the delivery after the gap notice: no jump reported, no duplicate");
    note("repeated offsets dropped (client.duplicates 2); a skipped one delivered with gap {reason: jump}; {type:gap} gives gap {reason: gateway}");

    // ---- /stats and the dashboard's history card ----------------------------------------------
    const stats = await getJson(url + "/stats");
    const h = stats.history;
    check(h && h.topics === 2 && h.messages === seq + 3 && h.bytes > 0 && h.evictions === 0,
      `/stats history: ${JSON.stringify(h)} (chat.room ${seq} messages, chat.lobby 3)`);
    equal([h.recoveries, h.recoveries_failed, stats.totals.recoveries], [4, 0, 4], "/stats recoveries (2 drops, 2 history topics)");
    const dash = await b.context.newPage();
    await dash.goto(url + "/");
    const card = await until("the dashboard's history card", () => dash.evaluate(() => {
      const c = document.querySelector('.card[data-stat="history"]');
      return !c.hidden && c.querySelector(".value").dataset.value !== "" &&
        { messages: Number(c.querySelector(".value").dataset.value), detail: c.querySelector(".sub").textContent };
    }), 5000);
    check(card.messages >= seq + 3 && /2 topics/.test(card.detail) && /4 recovered, 0 failed/.test(card.detail),
      `the history card: ${JSON.stringify(card)}`);
    await dash.close();
    note(`/stats history ${JSON.stringify(h)}; the dashboard's card: ${card.detail}`);

    // ---- the gateway restarts: a new epoch, a gap ------------------------------------------------
    const addr = gateway.addr;
    const before = await closes();
    await gateway.kill();
    t0 = Date.now();
    await until("the close event of the kill", async () => (await closes()) > before, 5000);
    gateway = await OwnGateway.start(bin, args(addr), log);
    await until("gap events of both history topics", () =>
      page.evaluate(() => eventsOf("gap").filter((e) => e.reason === "epoch").length === 2), 5000);
    const gapMs = Date.now() - t0;
    await publish(url, "chat.room", { restarted: 1 });
    await until("the first message of the new epoch", () =>
      page.evaluate(() => of("chat.room").at(-1).data.restarted === 1), 5000);
    const restart = await page.evaluate(() => ({
      gaps: eventsOf("gap").filter((e) => e.reason === "epoch").map(({ type, ...d }) => d),
      last: of("chat.room").at(-1),
      position: client.position("chat.room"),
      recovered: eventsOf("recovered").length,
      duplicates: client.duplicates,
      newsGaps: eventsOf("gap", "news").length,
      errors: eventsOf("error"),
    }));
    equal(restart.gaps.sort((a, b) => a.topic.localeCompare(b.topic)),
      [{ topic: "chat.lobby", reason: "epoch" }, { topic: "chat.room", reason: "epoch" }], "gap events after the restart");
    check(restart.position.epoch !== epoch && typeof restart.position.epoch === "string", `a new epoch: ${JSON.stringify(restart.position)}`);
    equal(restart.position.offset, 1, "the new stream's first offset");
    equal(restart.last, { topic: "chat.room", data: { restarted: 1 }, binary: false, offset: 1 }, "offset 1 of the new epoch delivered (not taken for a duplicate)");
    equal([restart.recovered, restart.duplicates, restart.newsGaps], [4, 2, 0], "no recovered event, no new duplicate, nothing for news");
    equal(restart.errors, [], "no error event");
    const after = (await getJson(url + "/stats")).history;
    equal([after.recoveries, after.recoveries_failed], [0, 2], "/stats recoveries of the new gateway");
    note(`gateway restarted: gap {reason: epoch} for chat.room and chat.lobby ${gapMs} ms after the kill; new epoch ${restart.position.epoch}, offset 1 delivered`);
    check(b.errors.length === 0, "page errors: " + b.errors.join("; "));
  } catch (e) {
    const seen = await b.page
      .evaluate(() => JSON.stringify({ events: self.events, messages: self.messages }))
      .catch(() => "(the page did not answer)");
    e.message += "\n---- the page's events and messages ----\n" + seen;
    e.message += "\n---- wsgate log ----\n" + log.join("\n");
    throw e;
  } finally {
    relay.close();
    await b.close();
    await gateway.kill();
  }
}
