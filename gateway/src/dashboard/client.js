/*
 * wsgate client: a small, dependency-free JavaScript client for the wsgate pub/sub protocol.
 * Served by the gateway at /client.js; no build step.
 *
 * Load it any of these ways; each defines `WsgateClient` on the global object:
 *
 *   <script src="/client.js"></script>              classic script (a page)
 *   await import("/client.js")                        ES module code (side-effect import)
 *   importScripts("/client.js")                       a classic Worker
 *   require("./client.js")                            CommonJS (Node 22+, which has WebSocket)
 *
 *   const client = new WsgateClient("ws://localhost:8080/ws");
 *   client.on("message", ({ topic, data }) => console.log(topic, data));
 *   await client.subscribe("news");                   // resolves on the gateway's ack
 *   await client.publish("news", { hello: "world" }); // JSON data, acked too: on a topic
 *                                                     // with history (one node), the ack
 *                                                     // resolves to { id, offset, epoch }
 *   client.publishBinary("files", new Uint8Array([1, 2, 3]));  // or an ArrayBuffer or a Blob
 *
 * Connection: opened at once; when it drops (anything but close()), it is opened again after
 * an exponential backoff with jitter (`reconnect: { min, max, factor, jitter }`, in ms), and
 * every subscribed topic is subscribed again. `reconnect: false` turns that off.
 *
 * History and recovery: on a topic with history (a `[[history]]` rule of the gateway) every
 * delivery carries an offset and the subscribe's ack the topic's offset and epoch. The client
 * keeps, per subscribed topic, the last offset it got and the epoch (`client.position(topic)`);
 * when it subscribes again after a reconnect it asks for what it missed
 * (`"recover":{"offset":O,"epoch":E}`): the gateway sends those messages, in order, as
 * ordinary `message` events, then the ack, and the client emits `recovered`; when the gateway
 * cannot (another epoch: it restarted; too old: no longer kept), the client emits `gap` and the
 * application refetches its state. A delivery whose offset is not the next one also emits
 * `gap` (reason "jump"; the message is delivered); one at or below the last offset is a
 * duplicate, dropped (counted in `client.duplicates`). Topics without history: nothing of this.
 * In a cluster the offsets are the same on every node, so the recovery works on whichever node
 * the client reconnects to. A resubscribe refused as `unavailable` (the gateway cannot read the
 * topic's history from Redis yet) is tried again, from 250 ms doubling to 10 s, while the socket
 * lasts.
 *
 * Promises: subscribe, unsubscribe and publish send an `id` and settle on the gateway's answer:
 * `{"type":"ack","id":N}` resolves, `{"type":"error","id":N,...}` rejects with an Error whose
 * `code` is the gateway's code (`invalid_topic`, `rate_limited`, ...). A request sent on a socket
 * that closes before the answer rejects with code `disconnected`; one made while the socket is
 * not open waits for the next open; any of them rejects with code `timeout` after `timeout` ms
 * (default 10 s) and with code `closed` after close().
 *
 * Events (the client is an EventTarget: addEventListener(type, e => e.detail), or
 * on(type, detail => ...), which returns a function that removes the listener):
 *   open        { url, reconnected }          a socket opened (reconnected: not the first one)
 *   reconnect   { attempt }                   a socket opened after a drop; topics resubscribed
 *   close       { code, reason, wasClean, willReconnect }
 *   reconnecting { attempt, delay }           a new socket will be tried in `delay` ms
 *   message     { topic, data, binary, offset }  a delivery: `data` is the parsed JSON, or for
 *                                             a binary delivery a Uint8Array of the payload;
 *                                             `offset` only on a topic with history
 *   recovered   { topic, from, to, count }    a resubscribe got what was published after offset
 *                                             `from` up to `to`: `count` messages, delivered as
 *                                             `message` events before this one
 *   gap         { topic, reason }             messages of `topic` were missed and cannot be
 *                                             recovered: refetch. reason: "epoch" (the stream is
 *                                             another: the gateway restarted), "too_old" (no
 *                                             longer kept), "ahead", "jump" (a delivery skipped
 *                                             offsets; also `last` and `offset`), "gateway" (the
 *                                             gateway's {"type":"gap"} notice)
 *   error       { error }                     an error not tied to a request (a failed
 *                                             resubscribe, an answer without id, a bad frame)
 */
(function (root) {
  "use strict";

  const MAX_TOPIC_BYTES = 255;
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();

  function clientError(code, message) {
    const e = new Error(message);
    e.code = code;
    return e;
  }

  function topicBytes(topic) {
    const bytes = encoder.encode(String(topic));
    if (bytes.length < 1 || bytes.length > MAX_TOPIC_BYTES) {
      throw clientError("invalid_topic", "a topic is 1 to 255 bytes of UTF-8");
    }
    return bytes;
  }

  class WsgateClient extends EventTarget {
    /**
     * @param {string} url  ws:// or wss:// URL of the gateway's /ws endpoint
     * @param {object} [options]
     * @param {{min?: number, max?: number, factor?: number, jitter?: number}|false} [options.reconnect]
     *   backoff in ms: the n-th retry waits min * factor^n, at most max, less up to
     *   jitter * that at random (defaults 250, 30000, 2, 0.5); false: never reconnect
     * @param {number} [options.timeout]  ms before a request rejects with `timeout` (10000)
     * @param {string|string[]} [options.protocols]  WebSocket subprotocols (e.g. a token)
     * @param {boolean} [options.connect]  open at once (true); else call connect()
     */
    constructor(url, options = {}) {
      super();
      this.url = String(url);
      const r = options.reconnect === undefined ? {} : options.reconnect;
      this.reconnect =
        r === false
          ? false
          : {
              min: r.min ?? 250,
              max: r.max ?? 30000,
              factor: r.factor ?? 2,
              jitter: Math.min(1, Math.max(0, r.jitter ?? 0.5)),
            };
      this.timeout = options.timeout ?? 10000;
      this.protocols = options.protocols;
      /** Topics this client is subscribed to (and subscribes again after a reconnect). */
      this.topics = new Set();
      this.ws = null;
      this.attempt = 0;
      this.opens = 0;
      this.closed = false;
      this._nextId = 1;
      this._pending = new Map(); // id -> request, sent and waiting for its answer
      this._queue = []; // requests waiting for an open socket
      this._retryTimer = null;
      this._handlers = new Map(); // topic -> Set of handlers given to subscribe()
      /** Deliveries dropped because their offset was not past the last one of their topic. */
      this.duplicates = 0;
      this._positions = new Map(); // topic -> { offset, epoch, resync } of a topic with history
      this._subscribedOn = new Set(); // topics a subscribe was sent for on the current socket
      this._recovering = new Map(); // topic -> { from, count }: a recovery sent, not yet acked
      if (options.connect !== false) this.connect();
    }

    /** Whether a socket is open now. */
    get connected() {
      return this.ws !== null && this.ws.readyState === 1;
    }

    /** Adds a listener that gets the event's detail; returns a function that removes it. */
    on(type, fn) {
      const listener = (e) => fn(e.detail);
      this.addEventListener(type, listener);
      return () => this.removeEventListener(type, listener);
    }

    /** Resolves on the next `type` event with its detail. */
    once(type) {
      return new Promise((resolve) =>
        this.addEventListener(type, (e) => resolve(e.detail), { once: true }),
      );
    }

    /**
     * Where this client is in `topic`'s stream: `{ offset, epoch }` (the last offset it got,
     * and the epoch of the stream), or undefined when the topic has no history (or no
     * acknowledged subscribe yet).
     */
    position(topic) {
      const pos = this._positions.get(String(topic));
      if (!pos || typeof pos.epoch !== "string" || typeof pos.offset !== "number") return undefined;
      return { offset: pos.offset, epoch: pos.epoch };
    }

    _emit(type, detail) {
      this.dispatchEvent(new CustomEvent(type, { detail }));
    }

    /** Opens a socket now (it is opened by the constructor unless `connect: false`). */
    connect() {
      if (this.closed || this.ws) return;
      clearTimeout(this._retryTimer);
      this._retryTimer = null;
      let ws;
      try {
        ws = new WebSocket(this.url, this.protocols);
      } catch (error) {
        this._emit("error", { error });
        this._scheduleReconnect();
        return;
      }
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onopen = () => this._onOpen(ws);
      ws.onmessage = (e) => this._onMessage(e);
      ws.onclose = (e) => this._onClose(ws, e);
      ws.onerror = () => {}; // a close event follows, with the code
    }

    _onOpen(ws) {
      if (ws !== this.ws) return;
      const reconnected = this.opens > 0;
      this.opens += 1;
      const attempt = this.attempt;
      this.attempt = 0;
      this._emit("open", { url: this.url, reconnected });
      // subscribe again to every topic, before anything queued meanwhile
      const queuedSubscribes = new Set(
        this._queue.filter((r) => r.msg && r.msg.type === "subscribe").map((r) => r.msg.topic),
      );
      // a topic whose history the gateway cannot read yet (its Redis out of reach) is asked
      // again, with backoff, for as long as this connection lasts
      const resubscribe = (topic, wait) => {
        this._sendRequest({ type: "subscribe", topic }, null).catch((error) => {
          if (error.code === "unavailable" && this.ws === ws && this.topics.has(topic)) {
            setTimeout(() => {
              if (this.ws === ws && this.topics.has(topic)) resubscribe(topic, Math.min(wait * 2, 10000));
            }, wait);
            return;
          }
          if (error.code !== "disconnected" && error.code !== "closed") {
            this._emit("error", { error, topic });
          }
        });
      };
      for (const topic of this.topics) {
        if (queuedSubscribes.has(topic)) continue;
        resubscribe(topic, 250);
      }
      const queued = this._queue;
      this._queue = [];
      for (const req of queued) this._transmit(req);
      if (reconnected) this._emit("reconnect", { attempt });
    }

    _onMessage(e) {
      if (typeof e.data !== "string") {
        const bytes = new Uint8Array(e.data);
        const len = bytes[0];
        if (!(len >= 1) || bytes.length < 1 + len) {
          this._emit("error", { error: clientError("bad_frame", "a binary message without a topic") });
          return;
        }
        const topic = decoder.decode(bytes.subarray(1, 1 + len));
        this._deliver({ topic, data: bytes.subarray(1 + len), binary: true });
        return;
      }
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch (error) {
        this._emit("error", { error });
        return;
      }
      if (msg.type === "message") {
        if (typeof msg.offset === "number") {
          if (!this._track(msg.topic, msg.offset)) return;
          this._deliver({ topic: msg.topic, data: msg.data, binary: false, offset: msg.offset });
        } else {
          this._deliver({ topic: msg.topic, data: msg.data, binary: false });
        }
      } else if (msg.type === "ack" || msg.type === "error") {
        const req = msg.id === undefined ? undefined : this._pending.get(msg.id);
        if (!req) {
          if (msg.type === "error") {
            this._emit("error", { error: clientError(msg.code, msg.message) });
          }
          return;
        }
        this._settle(req);
        if (msg.type === "ack") {
          if (req.msg && req.msg.type === "subscribe") this._acked(req.msg.topic, msg);
          const { type, ...answer } = msg;
          req.resolve(answer);
        } else {
          if (req.msg && req.msg.type === "subscribe") this._recovering.delete(req.msg.topic);
          req.reject(clientError(msg.code, msg.message));
        }
      } else if (msg.type === "gap" && typeof msg.topic === "string") {
        // the gateway knows this subscriber missed messages: the next offset starts afresh
        const pos = this._positions.get(msg.topic);
        if (pos) pos.resync = true;
        this._emit("gap", { topic: msg.topic, reason: "gateway" });
      }
    }

    /**
     * A delivery of `topic` at `offset`: false for a duplicate (dropped); emits `gap` when
     * offsets were skipped.
     */
    _track(topic, offset) {
      const pos = this._positions.get(topic);
      if (!pos) {
        if (this.topics.has(topic)) this._positions.set(topic, { offset, epoch: undefined, resync: false });
        return true;
      }
      if (typeof pos.offset === "number" && !pos.resync) {
        if (offset <= pos.offset) {
          this.duplicates += 1;
          return false;
        }
        if (offset !== pos.offset + 1) {
          this._emit("gap", { topic, reason: "jump", last: pos.offset, offset });
        }
      }
      pos.offset = offset;
      pos.resync = false;
      const recovering = this._recovering.get(topic);
      if (recovering) recovering.count += 1;
      return true;
    }

    /** The ack of a subscribe to `topic`: where its stream is, whether it recovered. */
    _acked(topic, ack) {
      const recovering = this._recovering.get(topic);
      this._recovering.delete(topic);
      if (!this.topics.has(topic)) return; // unsubscribed meanwhile
      if (typeof ack.epoch !== "string" || typeof ack.offset !== "number") {
        this._positions.delete(topic); // a topic without history (now)
        return;
      }
      const pos = this._positions.get(topic);
      const set = () =>
        this._positions.set(topic, { offset: ack.offset, epoch: ack.epoch, resync: false });
      if (ack.recovered === true && recovering) {
        set();
        this._emit("recovered", { topic, from: recovering.from, to: ack.offset, count: recovering.count });
      } else if (ack.recovered === false) {
        set();
        this._emit("gap", { topic, reason: ack.reason || "unknown" });
      } else if (!pos || typeof pos.epoch !== "string") {
        set();
      } else if (pos.epoch !== ack.epoch) {
        // another stream, and no recovery was asked for: what came before is not in it
        set();
        this._emit("gap", { topic, reason: "epoch" });
      } else if (!(pos.offset >= ack.offset)) {
        pos.offset = ack.offset;
      }
    }

    _deliver(detail) {
      this._emit("message", detail);
      const handlers = this._handlers.get(detail.topic);
      if (handlers) {
        for (const handler of [...handlers]) {
          try {
            handler(detail);
          } catch (error) {
            this._emit("error", { error, topic: detail.topic });
          }
        }
      }
    }

    _onClose(ws, e) {
      if (ws !== this.ws) return;
      this.ws = null;
      this._subscribedOn.clear();
      this._recovering.clear();
      const pending = [...this._pending.values()];
      for (const req of pending) {
        this._settle(req);
        req.reject(clientError("disconnected", `the connection closed (${e.code}) before the answer`));
      }
      const willReconnect = !this.closed && this.reconnect !== false;
      this._emit("close", { code: e.code, reason: e.reason, wasClean: e.wasClean, willReconnect });
      if (willReconnect) this._scheduleReconnect();
      else this._rejectQueue("closed");
    }

    _scheduleReconnect() {
      if (this.closed || this.reconnect === false || this._retryTimer) return;
      const { min, max, factor, jitter } = this.reconnect;
      const base = Math.min(max, min * Math.pow(factor, this.attempt));
      const delay = Math.round(base * (1 - jitter * Math.random()));
      this.attempt += 1;
      this._emit("reconnecting", { attempt: this.attempt, delay });
      this._retryTimer = setTimeout(() => {
        this._retryTimer = null;
        this.connect();
      }, delay);
    }

    _rejectQueue(code) {
      const queued = this._queue;
      this._queue = [];
      for (const req of queued) {
        this._settle(req);
        req.reject(clientError(code, "the client is closed"));
      }
    }

    _settle(req) {
      clearTimeout(req.timer);
      if (req.id !== undefined) this._pending.delete(req.id);
      const i = this._queue.indexOf(req);
      if (i >= 0) this._queue.splice(i, 1);
    }

    /** A request: sent now when the socket is open, else when it next opens. */
    _sendRequest(msg, payload) {
      return new Promise((resolve, reject) => {
        if (this.closed) {
          reject(clientError("closed", "the client is closed"));
          return;
        }
        const req = { msg, payload, resolve, reject, id: undefined, timer: null };
        req.timer = setTimeout(() => {
          this._settle(req);
          reject(clientError("timeout", `no answer within ${this.timeout} ms`));
        }, this.timeout);
        if (this.connected) this._transmit(req);
        else this._queue.push(req);
      });
    }

    _transmit(req) {
      if (req.payload !== null) {
        // a binary publish: the gateway does not answer it; done once handed to the socket
        this.ws.send(req.payload);
        this._settle(req);
        req.resolve({});
        return;
      }
      req.id = this._nextId++;
      this._pending.set(req.id, req);
      const msg = { ...req.msg, id: req.id };
      if (msg.type === "subscribe") {
        // the first subscribe of a topic on this socket asks for what this client missed
        const pos = this.position(msg.topic);
        if (pos && !this._subscribedOn.has(msg.topic)) {
          msg.recover = pos;
          this._recovering.set(msg.topic, { from: pos.offset, count: 0 });
        }
        this._subscribedOn.add(msg.topic);
      }
      this.ws.send(JSON.stringify(msg));
    }

    /**
     * Subscribes to `topic` (now, and again after every reconnect, recovering what it missed on
     * a topic with history). Resolves on the gateway's ack with `{id}`, and on a topic with
     * history `{id, topic, offset, epoch}` too; `handler`, when given, gets this topic's
     * messages.
     */
    subscribe(topic, handler) {
      topic = String(topic);
      try {
        topicBytes(topic);
      } catch (e) {
        return Promise.reject(e);
      }
      if (handler) {
        if (!this._handlers.has(topic)) this._handlers.set(topic, new Set());
        this._handlers.get(topic).add(handler);
      }
      const first = !this.topics.has(topic);
      this.topics.add(topic);
      const request = this._sendRequest({ type: "subscribe", topic }, null);
      // a refused first subscribe is not subscribed again after a reconnect
      if (first) {
        request.catch((e) => {
          if (e.code !== "disconnected" && e.code !== "timeout") {
            this.topics.delete(topic);
            this._handlers.delete(topic);
            this._positions.delete(topic);
          }
        });
      }
      return request;
    }

    /** Unsubscribes from `topic`. Resolves on the ack (at once when not connected). */
    unsubscribe(topic) {
      topic = String(topic);
      this.topics.delete(topic);
      this._handlers.delete(topic);
      this._positions.delete(topic);
      this._recovering.delete(topic);
      this._subscribedOn.delete(topic);
      if (!this.connected) return Promise.resolve({});
      return this._sendRequest({ type: "unsubscribe", topic }, null);
    }

    /** Publishes JSON `data` (any JSON value) to `topic`; resolves on the gateway's ack. */
    publish(topic, data) {
      topic = String(topic);
      let text;
      try {
        topicBytes(topic);
        text = JSON.stringify(data);
        if (text === undefined) throw clientError("bad_data", "data is not JSON");
      } catch (e) {
        return Promise.reject(e);
      }
      return this._sendRequest({ type: "publish", topic, data }, null);
    }

    /**
     * Publishes bytes (an ArrayBuffer, a typed array or DataView, or a Blob) to `topic` as one
     * binary frame `[L][topic][bytes]`; subscribers get the same bytes. The gateway does not
     * acknowledge binary publishes: the promise resolves once the frame is handed to the socket.
     */
    publishBinary(topic, bytes) {
      let t;
      try {
        t = topicBytes(topic);
      } catch (e) {
        return Promise.reject(e);
      }
      const head = new Uint8Array(1 + t.length);
      head[0] = t.length;
      head.set(t, 1);
      let payload;
      if (typeof Blob !== "undefined" && bytes instanceof Blob) {
        payload = new Blob([head, bytes]);
      } else {
        const body = ArrayBuffer.isView(bytes)
          ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
          : new Uint8Array(bytes);
        payload = new Uint8Array(head.length + body.length);
        payload.set(head, 0);
        payload.set(body, head.length);
      }
      return this._sendRequest(null, payload);
    }

    /** Closes for good: no reconnect; waiting requests reject with code `closed`. */
    close(code = 1000, reason = "") {
      this.closed = true;
      clearTimeout(this._retryTimer);
      this._retryTimer = null;
      this._rejectQueue("closed");
      if (this.ws) this.ws.close(code, reason);
    }
  }

  root.WsgateClient = WsgateClient;
  if (typeof module === "object" && module && module.exports) module.exports = { WsgateClient };
})(typeof globalThis !== "undefined" ? globalThis : self);
