// Shared helpers of the browser tests: launching Debian's Chromium headless with a fresh
// profile, starting gateways, polling, hashing.

import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";

export const CHROMIUM = process.env.WSGATE_CHROMIUM || "/usr/bin/chromium";

/** The flags every test launches Chromium with (besides playwright's own pipe flags). */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/**
 * Launches Chromium with a fresh --user-data-dir; returns {context, page, close()}. `args`: flags
 * besides CHROMIUM_ARGS (the TLS test pins its certificate's key with one).
 */
export async function launch({ viewport = { width: 1280, height: 900 }, args = [] } = {}) {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: run browser/setup.sh`);
  }
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "wsgate-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, ...args],
    viewport,
    timeout: 30_000,
  });
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  return {
    context,
    page,
    errors,
    async close() {
      await context.close().catch(() => {});
      fs.rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Polls `fn` (sync or async) until it returns a truthy value; throws `what` after `ms`. */
export async function until(what, fn, ms = 10_000, every = 50) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${fmt(last)})`);
    }
    await sleep(every);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function fmt(v) {
  if (v instanceof Error) return v.message;
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

/** Throws unless `cond`. */
export function check(cond, message) {
  if (!cond) throw new Error("check failed: " + message);
}

/** Throws unless the two are deeply equal (by JSON). */
export function equal(actual, expected, message) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`check failed: ${message}: got ${a}, expected ${e}`);
}

/** SHA-256 of bytes or a string (UTF-8), as hex. */
export const sha256 = (data) => createHash("sha256").update(data).digest("hex");

/**
 * The deterministic test bytes, as source text so that the page, a Worker and Node build the
 * very same bytes: `n` bytes of xorshift32 from `seed`.
 */
export const GEN_BYTES_SRC = `function genBytes(n, seed) {
  const out = new Uint8Array(n);
  const words = new Uint32Array(out.buffer, 0, n >>> 2);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    words[i] = x;
  }
  for (let i = words.length * 4; i < n; i++) out[i] = (i * 31 + seed) & 255;
  return out;
}`;

/** `n` characters of multi-byte UTF-8 text (1 to 4 bytes each), as source text too. */
export const GEN_TEXT_SRC = `function genText(bytes) {
  const unit = "wsgate é ö ß Ж ж € ✓ 日本語 한국어 😀 🚀 𝄞 ";
  const unitBytes = new TextEncoder().encode(unit).length;
  return unit.repeat(Math.ceil(bytes / unitBytes));
}`;

// eslint-disable-next-line no-new-func
export const genBytes = new Function(`${GEN_BYTES_SRC}; return genBytes;`)();
// eslint-disable-next-line no-new-func
export const genText = new Function(`${GEN_TEXT_SRC}; return genText;`)();

/**
 * A wsgate process this script owns (for the tests that restart it): started with
 * `bin ARGS...`, its `listening on ADDR` line awaited; its log kept for failures.
 */
export class OwnGateway {
  static async start(bin, args, log) {
    const g = new OwnGateway();
    g.log = log;
    g.child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
    g.child.stderr.on("data", (d) => log.push(`[wsgate ${g.child.pid}] ${d}`.trimEnd()));
    const lines = readline.createInterface({ input: g.child.stdout });
    g.addr = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`wsgate ${args.join(" ")} did not start`)), 15_000);
      g.child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`wsgate ${args.join(" ")} exited with ${code}`));
      });
      lines.on("line", (line) => {
        const m = /^listening on (\S+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
    });
    g.exited = new Promise((resolve) => g.child.on("exit", resolve));
    return g;
  }

  signal(sig) {
    this.child.kill(sig);
  }

  /** SIGSTOP, then waits until every thread has stopped (a group stop reaches the threads one
   * by one: a worker woken by a read could still answer it meanwhile). */
  async stop() {
    this.child.kill("SIGSTOP");
    const dir = `/proc/${this.child.pid}/task`;
    const deadline = Date.now() + 5000;
    for (;;) {
      const states = fs.readdirSync(dir).map((t) => {
        const stat = fs.readFileSync(`${dir}/${t}/stat`, "utf8");
        return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      });
      if (states.every((s) => s === "T" || s === "t")) return;
      if (Date.now() > deadline) throw new Error(`wsgate did not stop: thread states ${states.join("")}`);
      await sleep(5);
    }
  }

  async kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }
}

/**
 * Helpers installed in a test page (page.addScriptTag({ content: PAGE_HELPERS })), also usable
 * in a Worker: sockets with an inbox, hashes, close events.
 */
export const PAGE_HELPERS = `
${GEN_BYTES_SRC}
${GEN_TEXT_SRC}
self.wsUrl = (base, path) => base.replace(/^http/, "ws") + path;
/** Opens a WebSocket; resolves once open. Its messages collect in ws.inbox. */
self.wsOpen = (url, binaryType = "arraybuffer", ms = 10000) => new Promise((resolve, reject) => {
  const ws = new WebSocket(url);
  ws.binaryType = binaryType;
  ws.inbox = [];
  ws.waiters = [];
  ws.closeEvent = new Promise((r) => ws.addEventListener("close", (e) =>
    r({ code: e.code, reason: e.reason, wasClean: e.wasClean })));
  ws.onmessage = (e) => {
    ws.inbox.push(e.data);
    for (const w of ws.waiters.splice(0)) w();
  };
  const timer = setTimeout(() => reject(new Error("no open within " + ms + " ms: " + url)), ms);
  ws.onopen = () => { clearTimeout(timer); resolve(ws); };
  ws.onerror = () => { clearTimeout(timer); reject(new Error("socket error before open: " + url)); };
});
/** The next message of a socket (in order), within ms. */
self.wsNext = (ws, ms = 10000) => new Promise((resolve, reject) => {
  ws.taken = ws.taken || 0;
  const take = () => {
    if (ws.inbox.length > ws.taken) { clearTimeout(timer); resolve(ws.inbox[ws.taken++]); return true; }
    return false;
  };
  const timer = setTimeout(() => reject(new Error("no message within " + ms + " ms")), ms);
  if (!take()) {
    const wait = () => { if (!take()) ws.waiters.push(wait); };
    ws.waiters.push(wait);
  }
});
self.wsClosed = (ws, ms = 10000) => Promise.race([
  ws.closeEvent,
  new Promise((_, reject) => setTimeout(() => reject(new Error("no close event within " + ms + " ms")), ms)),
]);
self.toBytes = async (data) => new Uint8Array(data instanceof Blob ? await data.arrayBuffer() : data);
self.hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
self.sha256 = async (data) => {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : await toBytes(data);
  return hex(await crypto.subtle.digest("SHA-256", bytes));
};
self.withTopic = (topic, payload) => {
  const t = new TextEncoder().encode(topic);
  const out = new Uint8Array(1 + t.length + payload.length);
  out[0] = t.length; out.set(t, 1); out.set(payload, 1 + t.length);
  return out;
};
`;

/** A binary publish frame as the protocol lays it out: [L][topic][payload]. */
export function withTopic(topic, payload) {
  const t = Buffer.from(topic, "utf8");
  return Buffer.concat([Buffer.from([t.length]), t, Buffer.from(payload)]);
}

/** Opens a page of the gateway's origin (a plain page: /healthz) with the helpers installed. */
export async function gatewayPage(page, url) {
  await page.goto(url + "/healthz");
  await page.addScriptTag({ content: PAGE_HELPERS });
}

/** GET url, as JSON. */
export async function getJson(url) {
  const r = await fetch(url, { signal: AbortSignal.timeout(5000) });
  if (!r.ok) throw new Error(`GET ${url}: ${r.status}`);
  return r.json();
}

/** GET url/metrics: one series' value (`name{labels}`), or 0 when absent. */
export async function metric(url, series) {
  const r = await fetch(url + "/metrics", { signal: AbortSignal.timeout(5000) });
  const text = await r.text();
  for (const line of text.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  }
  return 0;
}
