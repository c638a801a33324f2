// What clients/node's checks share: failures that say what was wrong, a `ws` client whose reads
// time out instead of hanging, and the loop that runs the checks and prints one line each.

import WebSocket from 'ws';

/** A check's failure, with what was expected and what came. */
export class CheckFailed extends Error {}

export function expect(cond, what) {
  if (!cond) throw new CheckFailed(what);
}

function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
  }
  return v;
}

/** Whether two JSON values are equal, whatever the order of their keys. */
export function same(a, b) {
  return JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b));
}

/** A value for a failure message: a buffer's size and first bytes, else its JSON, cut. */
export function show(v) {
  if (Buffer.isBuffer(v)) return `<${v.length} bytes ${v.subarray(0, 24).toString('hex')}>`;
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 300 ? s.slice(0, 300) + '...' : s;
}

export function expectEq(got, want, what) {
  const equal = Buffer.isBuffer(got) && Buffer.isBuffer(want) ? got.equals(want) : same(got, want);
  if (!equal) throw new CheckFailed(`${what}: got ${show(got)}, want ${show(want)}`);
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new CheckFailed(`timed out after ${ms / 1000} s waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** A binary publish: `[L][topic][payload]`. */
export function binaryPublish(topic, payload) {
  const t = Buffer.from(topic, 'utf8');
  return Buffer.concat([Buffer.from([t.length]), t, payload]);
}

/** The gateway answered the upgrade with an HTTP status instead of 101. */
export class RefusedUpgrade extends Error {
  constructor(status) {
    super(`upgrade refused with ${status}`);
    this.status = status;
  }
}

/** A `ws` connection whose messages are queued and whose reads time out after `timeoutMs`. */
export class Client {
  constructor(ws, timeoutMs) {
    this.ws = ws;
    this.timeoutMs = timeoutMs;
    this.queue = [];
    this.waiters = [];
    this.upgrade = null; // the gateway's 101 answer (its headers, the socket under it)
    this.closeInfo = null; // {code, reason} from the gateway's close frame (1006: none)
    this.errors = [];
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        this.wake();
      });
    });
    ws.on('message', (data, isBinary) => {
      this.queue.push(isBinary ? { binary: true, data } : { binary: false, data: data.toString('utf8') });
      this.wake();
    });
    ws.on('error', (e) => this.errors.push(e));
  }

  /** Connects to `url`; `options` go to `ws`. Resolves once open; a refusal rejects with
   * RefusedUpgrade. */
  static connect(url, options, timeoutMs) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { handshakeTimeout: timeoutMs, ...options });
      const client = new this(ws, timeoutMs);
      ws.once('upgrade', (res) => (client.upgrade = res));
      ws.once('open', () => resolve(client));
      ws.once('unexpected-response', (req, res) => {
        res.resume();
        req.destroy();
        reject(new RefusedUpgrade(res.statusCode));
      });
      ws.once('error', (e) => reject(e));
    });
  }

  /** The gateway's Sec-WebSocket-Extensions answer, undefined when it sent none. */
  get extensionsHeader() {
    return this.upgrade?.headers['sec-websocket-extensions'];
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  async recv(what = 'a message') {
    const deadline = Date.now() + this.timeoutMs;
    while (this.queue.length === 0) {
      if (this.closeInfo) {
        throw new CheckFailed(`connection closed (${this.closeInfo.code} ${this.closeInfo.reason}) while waiting for ${what}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new CheckFailed(`timed out after ${this.timeoutMs / 1000} s waiting for ${what}`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.queue.shift();
  }

  async recvText(what = 'a text message') {
    const m = await this.recv(what);
    expect(!m.binary, `expected ${what}, got a binary message ${show(m.data)}`);
    return m.data;
  }

  async recvJson(what = 'a JSON text message') {
    const m = await this.recvText(what);
    try {
      return JSON.parse(m);
    } catch {
      throw new CheckFailed(`not JSON: ${show(m)}`);
    }
  }

  async recvBinary(what = 'a binary message') {
    const m = await this.recv(what);
    expect(m.binary, `expected ${what}, got a text message ${show(m.data)}`);
    return m.data;
  }

  /** Sends a string as text, a Buffer as binary (or as text with {binary: false}). */
  send(data, options = {}) {
    return new Promise((resolve, reject) => {
      this.ws.send(data, { binary: Buffer.isBuffer(data), ...options }, (e) => (e ? reject(e) : resolve()));
    });
  }

  sendJson(obj) {
    return this.send(JSON.stringify(obj));
  }

  /** Sends a control message with an id; the very next message must be its exact ack. */
  async acked(obj) {
    await this.sendJson(obj);
    const reply = await this.recvJson(`the ack of ${show(obj)}`);
    expectEq(reply, { type: 'ack', id: obj.id }, `reply to ${show(obj)}`);
  }

  /** Waits for the gateway to close; returns the code and reason of its close frame. */
  closedWith(ms = this.timeoutMs) {
    return withTimeout(this.closed, ms, 'the gateway to close the connection');
  }

  async close() {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
    await this.closedWith().catch(() => this.ws.terminate());
  }
}

/** Runs `checks` ({name, fn}; only those named in `only` when it is not empty), each within
 * `checkTimeoutMs`; prints `PASS name time (note)` or `FAIL name: why`, then the counts, and
 * exits 1 when any failed. */
export async function runChecks(checks, only, checkTimeoutMs) {
  let passed = 0;
  let failed = 0;
  for (const { name, fn } of checks) {
    if (only.length && !only.includes(name)) continue;
    const t = Date.now();
    try {
      const note = await withTimeout(fn(), checkTimeoutMs, `the whole check (${checkTimeoutMs / 1000} s)`);
      console.log(`PASS ${name} ${((Date.now() - t) / 1000).toFixed(2)}s${note ? ` (${note})` : ''}`);
      passed++;
    } catch (e) {
      console.log(`FAIL ${name}: ${e instanceof CheckFailed ? e.message : e.stack || `${e.name}: ${e.message}`}`);
      failed++;
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  // leftover sockets of a failed check must not keep the process alive
  process.exit(failed ? 1 : 0);
}
