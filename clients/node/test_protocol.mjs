#!/usr/bin/env node
// The checks of shared/PROTOCOL.md, run against a live wsgate with the Node `ws` client.
//
//     node clients/node/test_protocol.mjs --url http://127.0.0.1:8080 [--max-message-size BYTES]
//                                         [--compression on|off]
//
// Prints one line per check (PASS or FAIL, its name, and why it failed), then `N passed, N failed`,
// and exits 1 when any check failed (2 on bad arguments). Every read has a timeout, so a message
// that never comes fails the check instead of hanging it. --max-message-size must be the gateway's
// limit (its default, 64 MiB, unless told otherwise): the too-big check sends one byte more.
// --compression says whether the gateway accepts permessage-deflate (its default, on) or was
// started with `--compression false` (off): the compression checks expect one or the other.
//
// Error codes: PROTOCOL.md gives the shape of an error (`type`, `id`, `code`, `message`) but not
// the codes; the ones checked here are the gateway's (gateway/tests/pubsub.rs checks the same):
// unknown_type, invalid_json, invalid_topic, missing_field, invalid_message.
//
// The same checks as clients/python/test_protocol.py, with the same names.

import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import {
  binaryPublish,
  CheckFailed,
  Client as BaseClient,
  expect,
  expectEq,
  RefusedUpgrade,
  runChecks,
  same,
  show,
  withTimeout,
} from './harness.mjs';

const wsVersion = createRequire(import.meta.url)('ws/package.json').version;

const TIMEOUT_MS = 5000; // the longest any single read waits
let ARGS;

/** A client of this gateway: paths are taken relative to --url. */
class Client extends BaseClient {
  /** Connects; `options` go to `ws` (perMessageDeflate: false declines permessage-deflate). */
  static open(path = '/ws', options = {}) {
    return this.connect(ARGS.wsUrl + path, options, TIMEOUT_MS);
  }
}

async function expectError(c, text, code, id) {
  await c.send(text);
  const short = show(text.slice(0, 80));
  const v = await c.recvJson(`the error for ${short}`);
  expect(v && typeof v === 'object' && !Array.isArray(v), `${short} -> ${show(v)}: not an object`);
  expectEq(v.type, 'error', `${short} -> ${show(v)}: type`);
  expectEq(v.code, code, `${short} -> ${show(v)}: code`);
  expect(typeof v.message === 'string' && v.message.length > 0, `${short} -> ${show(v)}: no message`);
  if (id === undefined) {
    expect(!('id' in v), `${short} has no id, but the error has one: ${show(v)}`);
  } else {
    expect(v.id === id, `${short} -> ${show(v)}: id not echoed (${id})`);
  }
  const extra = Object.keys(v).filter((k) => !['type', 'code', 'message', 'id'].includes(k));
  expect(extra.length === 0, `${show(v)}: unexpected fields ${extra}`);
}

/** One HTTP request: {status, headers, body (Buffer)}. */
function httpRequest(method, path, body, headers = {}) {
  const u = new URL(ARGS.url);
  return withTimeout(
    new Promise((resolve, reject) => {
      const req = http.request(
        { host: u.hostname, port: u.port, method, path, headers: { Connection: 'close', ...headers } },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    }),
    TIMEOUT_MS,
    `the answer to ${method} ${path.slice(0, 60)}`,
  );
}

function post(path, body, contentType) {
  const headers = { 'Content-Length': String(body.length) };
  if (contentType !== null) headers['Content-Type'] = contentType;
  return httpRequest('POST', path, body, headers);
}

// ---- the checks ---------------------------------------------------------------------------------

const CHECKS = [];
const check = (name, fn) => CHECKS.push({ name, fn });

check('health_endpoints', async () => {
  for (const path of ['/healthz', '/readyz']) {
    const r = await httpRequest('GET', path);
    expectEq(r.status, 200, `GET ${path} (${show(r.body.toString())})`);
  }
});

check('subscribe_publish_unsubscribe_acks_with_ids', async () => {
  const c = await Client.open();
  await c.acked({ type: 'subscribe', topic: 'js-ack', id: 1 });
  await c.acked({ type: 'subscribe', topic: 'js-ack', id: 2 }); // twice is fine
  // the publisher is subscribed: its own message comes back once, and the publish is acked
  await c.send('{"type":"publish","topic":"js-ack","data":"hello","id":3}');
  const got = [await c.recvJson('the delivery and the ack'), await c.recvJson('the delivery and the ack')];
  const wantMsg = { type: 'message', topic: 'js-ack', data: 'hello' };
  const wantAck = { type: 'ack', id: 3 };
  expect(
    (same(got[0], wantMsg) && same(got[1], wantAck)) || (same(got[0], wantAck) && same(got[1], wantMsg)),
    `publish with id 3 to a subscribed topic: got ${show(got)}`,
  );
  await c.acked({ type: 'unsubscribe', topic: 'js-ack', id: 4 });
  // unsubscribing from a topic one never had is fine too
  await c.acked({ type: 'unsubscribe', topic: 'js-never', id: 5 });
  // ids may be negative and beyond 2^53 (not representable as a JS number): echoed exactly
  const big = '-9007199254740993';
  await c.send(`{"type":"subscribe","topic":"js-big","id":${big}}`);
  const raw = await c.recvText('the ack of a large id');
  expectEq(raw.replace(/\s/g, ''), `{"type":"ack","id":${big}}`, 'ack of a large id (as text)');
  // no id: no answer, so the next message is the ack of the next request
  await c.send('{"type":"subscribe","topic":"js-quiet"}');
  await c.send('{"type":"unsubscribe","topic":"js-quiet"}');
  await c.acked({ type: 'subscribe', topic: 'js-ack2', id: 6 });
  await c.close();
});

check('unknown_type_is_an_error_with_the_id', async () => {
  const c = await Client.open();
  await expectError(c, '{"type":"shout","topic":"a","id":1}', 'unknown_type', 1);
  await expectError(c, '{"type":"shout","topic":"a"}', 'unknown_type');
  await expectError(c, '{"type":"SUBSCRIBE","topic":"a","id":2}', 'unknown_type', 2);
  await c.acked({ type: 'subscribe', topic: 'js-still-open', id: 3 });
  await c.close();
});

check('invalid_json_is_an_error_and_the_session_stays_open', async () => {
  const c = await Client.open();
  await expectError(c, '{"type":"subscribe",', 'invalid_json');
  await expectError(c, 'not json at all', 'invalid_json');
  await expectError(c, '{"type":"subscribe","topic":"a"} trailing', 'invalid_json');
  // an id that comes before the break is echoed (gateway/tests/pubsub.rs)
  await expectError(c, '{"id":7,"type":"subscribe","topic":', 'invalid_json', 7);
  // JSON, but not an object
  await expectError(c, '["subscribe","a"]', 'invalid_message');
  await expectError(c, '"subscribe"', 'invalid_message');
  // missing fields
  await expectError(c, '{"type":"subscribe","id":5}', 'missing_field', 5);
  await expectError(c, '{"type":"publish","topic":"a","id":6}', 'missing_field', 6);
  await c.acked({ type: 'subscribe', topic: 'js-still-open', id: 8 });
  await c.close();
});

check('over_long_and_bad_topics_are_errors', async () => {
  const c = await Client.open();
  const longTopic = 't'.repeat(256);
  await expectError(c, JSON.stringify({ type: 'subscribe', topic: longTopic, id: 1 }), 'invalid_topic', 1);
  await expectError(c, JSON.stringify({ type: 'publish', topic: longTopic, data: 1 }), 'invalid_topic');
  // 128 two-byte characters: 256 bytes, over the limit though only 128 characters
  await expectError(c, JSON.stringify({ type: 'subscribe', topic: 'é'.repeat(128), id: 2 }), 'invalid_topic', 2);
  await expectError(c, '{"type":"subscribe","topic":"","id":3}', 'invalid_topic', 3);
  await expectError(c, '{"type":"subscribe","topic":"a\\u0001b","id":4}', 'invalid_topic', 4);
  await expectError(c, '{"type":"subscribe","topic":5,"id":5}', 'invalid_topic', 5);
  // exactly 255 bytes is a topic; it works end to end
  const maxTopic = 'm'.repeat(255);
  await c.acked({ type: 'subscribe', topic: maxTopic, id: 6 });
  await c.send(JSON.stringify({ type: 'publish', topic: maxTopic, data: [255] }));
  expectEq(
    await c.recvText('the delivery on a 255-byte topic'),
    `{"type":"message","topic":"${maxTopic}","data":[255]}`,
    'delivery on a 255-byte topic',
  );
  // binary publishes with a bad length prefix are errors without an id
  for (const bad of [Buffer.alloc(0), Buffer.from('\x00a', 'latin1'), Buffer.from('\x05ab', 'latin1')]) {
    await c.send(bad);
    const v = await c.recvJson(`the error for the binary publish ${show(bad)}`);
    expectEq(v.type, 'error', `binary publish ${show(bad)} -> ${show(v)}`);
    expect(!('id' in v), `binary publish ${show(bad)} -> ${show(v)} has an id`);
  }
  await c.acked({ type: 'subscribe', topic: 'js-still-open', id: 7 });
  await c.close();
});

check('text_publish_is_delivered_verbatim_to_other_subscribers', async () => {
  const subs = [await Client.open('/ws?subscribe=js-verbatim'), await Client.open('/ws?subscribe=js-verbatim')];
  const pub = await Client.open();
  for (const data of ['{"x": [1, 2.50, "\\u00e9", "é"], "y": null}', '12345678901234567890123', '"a string"', '-0.0', 'true']) {
    await pub.send(`{"type":"publish","topic":"js-verbatim","data":${data},"id":1}`);
    expectEq(await pub.recvJson('the publish ack'), { type: 'ack', id: 1 }, 'publish ack');
    for (const s of subs) {
      const got = await s.recvText(`the delivery of ${data}`);
      const want = `{"type":"message","topic":"js-verbatim","data":${data}}`;
      expect(got === want, `delivery (data must be the publisher's bytes verbatim): got ${show(got)}, want ${show(want)}`);
    }
  }
  for (const c of [...subs, pub]) await c.close();
});

check('binary_publish_is_delivered_byte_for_byte', async () => {
  const topic = 'js-bin/é';
  const sub = await Client.open('/ws?subscribe=' + encodeURIComponent(topic));
  const pub = await Client.open();
  for (const n of [0, 1, 125, 126, 65535, 65536, 300000]) {
    const msg = binaryPublish(topic, randomBytes(n));
    await pub.send(msg);
    const got = await sub.recvBinary(`the binary delivery of ${n} bytes`);
    expect(got.equals(msg), `binary delivery of ${n} payload bytes differs (${got.length} bytes came)`);
  }
  // a fragmented binary publish (three frames) is one message
  const msg = binaryPublish(topic, Buffer.from('in three pieces'));
  await pub.send(msg.subarray(0, 3), { binary: true, fin: false });
  await pub.send(msg.subarray(3, 10), { binary: true, fin: false });
  await pub.send(msg.subarray(10), { binary: true, fin: true });
  expectEq(await sub.recvBinary('the fragmented publish'), msg, 'fragmented binary publish');
  // a fragmented text publish too
  const text = `{"type":"publish","topic":"${topic}","data":{"frag":true}}`;
  await pub.send(text.slice(0, 5), { binary: false, fin: false });
  await pub.send(text.slice(5, 30), { binary: false, fin: false });
  await pub.send(text.slice(30), { binary: false, fin: true });
  expectEq(
    await sub.recvText('the fragmented text publish'),
    `{"type":"message","topic":"${topic}","data":{"frag":true}}`,
    'fragmented text publish',
  );
  for (const c of [sub, pub]) await c.close();
});

check('subscribe_at_connect_with_the_query_string', async () => {
  // subscribed before the 101: a publish right after the handshake reaches it, no round trip
  const sub = await Client.open('/ws?subscribe=js-q-a,js-q-b%2Cc,%C3%A9t%C3%A9');
  const pub = await Client.open();
  for (const [topic, data] of [['js-q-b', 1], ['c', 2], ['js-q-b,c', 3], ['js-q-a', 4], ['été', 5]]) {
    await pub.acked({ type: 'publish', topic, data, id: data });
  }
  // "js-q-b" and "c" alone were not subscribed (the comma was percent-encoded)
  for (const [topic, data] of [['js-q-b,c', 3], ['js-q-a', 4], ['été', 5]]) {
    expectEq(await sub.recvJson(`the delivery on ${topic}`), { type: 'message', topic, data }, 'delivery to a subscriber of the query');
  }
  // a bad topic in the query refuses the upgrade with a 400
  for (const query of ['z'.repeat(256), 'a%01b', 'a,,b']) {
    let c;
    try {
      c = await Client.open('/ws?subscribe=' + query);
    } catch (e) {
      if (!(e instanceof RefusedUpgrade)) throw e;
      expectEq(e.status, 400, `upgrade with ?subscribe=${query.slice(0, 40)}`);
      continue;
    }
    await c.close();
    // an empty item may be skipped; the others must be refused
    expect(query === 'a,,b', `upgrade with ?subscribe=${query.slice(0, 40)} was accepted`);
  }
  for (const c of [sub, pub]) await c.close();
});

check('unsubscribe_stops_delivery', async () => {
  const sub = await Client.open();
  const pub = await Client.open();
  await sub.acked({ type: 'subscribe', topic: 'js-unsub', id: 1 });
  await sub.acked({ type: 'subscribe', topic: 'js-marker', id: 2 });
  await pub.acked({ type: 'publish', topic: 'js-unsub', data: 'before', id: 1 });
  expectEq(
    await sub.recvJson('the delivery before unsubscribing'),
    { type: 'message', topic: 'js-unsub', data: 'before' },
    'delivery before unsubscribing',
  );
  await sub.acked({ type: 'unsubscribe', topic: 'js-unsub', id: 3 });
  await pub.acked({ type: 'publish', topic: 'js-unsub', data: 'after', id: 2 });
  await pub.send(binaryPublish('js-unsub', Buffer.from('after, binary')));
  await pub.acked({ type: 'publish', topic: 'js-marker', data: 'marker', id: 3 });
  // the publishes after the unsubscribe ack were not delivered: the marker comes first
  expectEq(
    await sub.recvJson('the marker'),
    { type: 'message', topic: 'js-marker', data: 'marker' },
    'first message after unsubscribing (the marker)',
  );
  for (const c of [sub, pub]) await c.close();
});

check('ordering_10000_messages_to_3_subscribers', async () => {
  const n = 10000;
  const topic = 'js-order';
  const subs = [];
  for (let k = 0; k < 3; k++) subs.push(await Client.open('/ws?subscribe=' + topic));
  const pub = await Client.open();

  const readAll = async (k, sub) => {
    for (let i = 0; i < n; i++) {
      const m = await sub.recvText(`message ${i} of ${n} (subscriber ${k})`);
      const want = `{"type":"message","topic":"${topic}","data":{"seq": ${i}}}`;
      if (m !== want) throw new CheckFailed(`subscriber ${k}, message ${i}: got ${show(m.slice(0, 120))}, want ${show(want)}`);
    }
    // nothing extra (no duplicate): the next message is the end marker
    expectEq(await sub.recvText(`the end marker (subscriber ${k})`), `{"type":"message","topic":"${topic}","data":"end"}`, `subscriber ${k} after ${n} messages`);
  };

  const t = Date.now();
  const readers = subs.map((s, k) => readAll(k, s));
  for (let i = 0; i < n; i++) {
    pub.ws.send(`{"type":"publish","topic":"${topic}","data":{"seq": ${i}}}`);
  }
  await pub.acked({ type: 'publish', topic, data: 'end', id: 1 });
  await Promise.all(readers);
  const took = (Date.now() - t) / 1000;
  for (const c of [...subs, pub]) await c.close();
  return `${3 * n} deliveries in ${took.toFixed(2)} s`;
});

check('http_publish_json_reaches_websocket_subscribers', async () => {
  const topic = 'js-http/json';
  const subs = [];
  for (let k = 0; k < 3; k++) subs.push(await Client.open('/ws?subscribe=' + encodeURIComponent(topic)));
  const path = '/publish/' + encodeURIComponent(topic);
  const body = '{"price": 42, "list": [1, 2.50, "é"]}';
  for (const ct of ['application/json', 'application/json; charset=utf-8']) {
    const r = await post(path, Buffer.from(body), ct);
    expectEq(r.status, 202, `POST ${path} (${ct}): ${show(r.body.toString())}`);
    expect((r.headers['content-type'] || '').startsWith('application/json'), `answer Content-Type ${r.headers['content-type']}`);
    expectEq(JSON.parse(r.body), { delivered: 3 }, 'answer of POST /publish');
    for (const [k, s] of subs.entries()) {
      const got = await s.recvText(`the HTTP publish (subscriber ${k})`);
      const want = `{"type":"message","topic":"${topic}","data":${body}}`;
      expect(got === want, `delivery of an HTTP JSON publish (data verbatim): got ${show(got)}, want ${show(want)}`);
    }
  }
  // JSON that is not JSON is refused (400) and delivers nothing
  let r = await post(path, Buffer.from('{not json'), 'application/json');
  expectEq(r.status, 400, `POST of invalid JSON (${show(r.body.toString())})`);
  // a topic nobody subscribes to: 202, zero deliveries
  r = await post('/publish/js-http-nobody', Buffer.from('1'), 'application/json');
  expectEq([r.status, JSON.parse(r.body)], [202, { delivered: 0 }], 'POST to a topic without subscribers');
  // an over-long topic is refused
  r = await post('/publish/' + 't'.repeat(256), Buffer.from('1'), 'application/json');
  expect(r.status >= 400 && r.status < 500, `POST to a 256-byte topic: ${r.status} ${show(r.body.toString())}`);
  // the next thing the subscribers see is a fresh publish, not the refused ones
  r = await post(path, Buffer.from('["last"]'), 'application/json');
  expectEq(r.status, 202, 'POST after the refused ones');
  for (const s of subs) {
    expectEq(await s.recvText('the last HTTP publish'), `{"type":"message","topic":"${topic}","data":["last"]}`, 'delivery after a refused POST');
  }
  for (const c of subs) await c.close();
});

check('http_publish_binary_reaches_websocket_subscribers', async () => {
  const topic = 'js-http/bin';
  const subs = [];
  for (let k = 0; k < 2; k++) subs.push(await Client.open('/ws?subscribe=' + encodeURIComponent(topic)));
  const path = '/publish/' + encodeURIComponent(topic);
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const payload = Buffer.concat([all, all, randomBytes(1000)]);
  for (const ct of ['application/octet-stream', 'text/plain', null]) {
    const r = await post(path, payload, ct);
    expectEq(r.status, 202, `POST ${path} (${ct}): ${show(r.body.toString())}`);
    expectEq(JSON.parse(r.body), { delivered: 2 }, `answer of POST /publish (${ct})`);
    for (const [k, s] of subs.entries()) {
      const got = await s.recvBinary(`the HTTP binary publish (${ct}, subscriber ${k})`);
      expect(got.equals(binaryPublish(topic, payload)), `binary delivery of an HTTP publish (${ct}) differs: ${show(got)}`);
    }
  }
  for (const c of subs) await c.close();
});

check('invalid_utf8_text_closes_with_1007', async () => {
  const c = await Client.open();
  await c.acked({ type: 'subscribe', topic: 'js-utf8', id: 1 });
  const bad = Buffer.concat([Buffer.from('{"type":"publish","topic":"js-utf8","data":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]);
  await c.send(bad, { binary: false }); // a text frame with invalid UTF-8 (ws does not check what it sends)
  const { code, reason } = await c.closedWith();
  expectEq(code, 1007, `close code after invalid UTF-8 (reason ${show(reason)})`);
});

check('too_big_message_closes_with_1009', async () => {
  const c = await Client.open();
  const msg = binaryPublish('js-big', Buffer.alloc(ARGS.maxMessageSize - 6, 'x'));
  expect(msg.length === ARGS.maxMessageSize + 1, 'message size');
  c.send(msg).catch(() => {}); // the gateway may close before the whole message went out
  const { code, reason } = await c.closedWith(TIMEOUT_MS * 4);
  expectEq(code, 1009, `close code after a message over --max-message-size ${ARGS.maxMessageSize} (reason ${show(reason)})`);
});

check('client_close_code_is_echoed', async () => {
  for (const [code, reason] of [[1000, 'done'], [4001, 'bye']]) {
    const c = await Client.open();
    await c.acked({ type: 'subscribe', topic: 'js-close', id: 1 });
    c.ws.close(code, reason);
    const info = await c.closedWith();
    expectEq(info.code, code, `close code the gateway answered to ${code}`);
  }
});

check('echo_endpoint_returns_each_message_unchanged', async () => {
  const c = await Client.open('/echo');
  const bin = Buffer.alloc(300);
  for (let i = 0; i < 300; i++) bin[i] = [0, 1, 255][i % 3];
  for (const msg of ['hello', 'é'.repeat(1000), '', bin, Buffer.alloc(0)]) {
    await c.send(msg);
    const got = await c.recv(`the echo of ${show(msg).slice(0, 30)}`);
    expectEq(got.binary, Buffer.isBuffer(msg), 'echo opcode (binary?)');
    expect(got.binary ? got.data.equals(msg) : got.data === msg, `echo of ${msg.length} differs`);
  }
  await c.close();
});

check('wrong_websocket_version_gets_426', async () => {
  const r = await httpRequest('GET', '/ws', undefined, {
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
    'Sec-WebSocket-Version': '8',
  });
  expectEq([r.status, r.headers['sec-websocket-version']], [426, '13'], 'answer to Sec-WebSocket-Version: 8');
});

// ---- permessage-deflate (RFC 7692) --------------------------------------------------------------

const DEFLATE_ANSWER = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';
const ECHO_SIZES = [16, 1024, 64 * 1024, 1024 * 1024];
const DEFLATE_METRICS = [
  'wsgate_deflate_sessions_total',
  'wsgate_compressions_total',
  'wsgate_deflate_payload_bytes_before_total',
  'wsgate_deflate_payload_bytes_after_total',
];
/** ws's own default offer, but compressing every message (its default threshold is 1 KiB). */
const DEFLATE_ALL = { perMessageDeflate: { threshold: 0 } };

const compressionOn = () => ARGS.compression === 'on';

/** Characters of `chars` (a string or an iterator of them) up to `n` UTF-8 bytes, padded with ASCII to `n`. */
function sizedText(chars, n) {
  const out = [];
  let bytes = 0;
  for (const ch of chars) {
    const len = Buffer.byteLength(ch);
    if (bytes + len > n) break;
    out.push(ch);
    bytes += len;
  }
  return out.join('') + 'x'.repeat(n - bytes);
}

/** `n` UTF-8 bytes of JSON-like text with 2-, 3- and 4-byte characters: compresses well. */
function repetitiveText(n) {
  const parts = [];
  for (let i = 0, len = 0; len <= n; i++) {
    const unit = `{"sym":"ÉTÉ-${i % 17}","px":${100 + (i % 9)}.25,"note":"日本語 ✓ 😀 Жж"},`;
    parts.push(unit);
    len += Buffer.byteLength(unit);
  }
  return sizedText(parts.join(''), n);
}

/** `n` UTF-8 bytes of random characters (1 to 4 bytes each, xorshift from `seed`): compresses poorly. */
function randomText(n, seed) {
  const ranges = [[0x21, 0x7f], [0xa1, 0x800], [0x4e00, 0x9fff], [0x1f300, 0x1f600]];
  let x = seed >>> 0 || 1;
  function* chars() {
    for (;;) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      const [lo, hi] = ranges[x & 3];
      yield String.fromCodePoint(lo + ((x >>> 2) % (hi - lo)));
    }
  }
  return sizedText(chars(), n);
}

function repetitiveBytes(n) {
  const unit = Buffer.from('\x00\x01\x02wsgate\xff\xfe', 'latin1');
  return Buffer.alloc(n, unit);
}

/** The permessage-deflate counters of /metrics, by name. */
async function deflateMetrics() {
  const r = await httpRequest('GET', '/metrics');
  expectEq(r.status, 200, 'GET /metrics');
  const values = {};
  for (const line of r.body.toString().split('\n')) {
    const [name, value] = line.split(' ');
    if (DEFLATE_METRICS.includes(name)) values[name] = Number(value);
  }
  expectEq(Object.keys(values).sort(), [...DEFLATE_METRICS].sort(), 'deflate series in /metrics');
  return values;
}

/** Text (repetitive and random, multi-byte UTF-8) and binary (repetitive and random) of each
 * size through /echo, compared byte for byte. */
let echoMessages;
async function echoRoundTrips(c, label) {
  echoMessages ??= ECHO_SIZES.map((n) => [n, [repetitiveText(n), randomText(n, n), repetitiveBytes(n), randomBytes(n)]]);
  for (const [n, messages] of echoMessages) {
    for (const msg of messages) {
      const binary = Buffer.isBuffer(msg);
      expectEq(binary ? msg.length : Buffer.byteLength(msg), n, 'test message size');
      await c.send(msg);
      const got = await c.recv(`the echo of ${n} bytes of ${binary ? 'binary' : 'text'} (${label})`);
      expectEq(got.binary, binary, `echo opcode (${label})`);
      expect(binary ? got.data.equals(msg) : got.data === msg, `the echo of ${n} bytes of ${binary ? 'binary' : 'text'} differs (${label})`);
    }
  }
}

check('permessage_deflate_negotiation', async () => {
  const byDefault = await Client.open('/echo'); // ws offers permessage-deflate by default
  const declined = await Client.open('/echo', { perMessageDeflate: false });
  expectEq(declined.extensionsHeader, undefined, 'the answer to a client that offers nothing');
  expectEq(declined.ws.extensions, '', 'extensions in use without an offer');
  const narrow = await Client.open('/echo', { perMessageDeflate: { serverMaxWindowBits: 10 } });
  if (compressionOn()) {
    expectEq(byDefault.extensionsHeader, DEFLATE_ANSWER, 'Sec-WebSocket-Extensions');
    expectEq(byDefault.ws.extensions, 'permessage-deflate', 'extensions in use');
    expectEq(narrow.extensionsHeader, `${DEFLATE_ANSWER}; server_max_window_bits=10`, 'answer to server_max_window_bits=10');
  } else {
    for (const c of [byDefault, narrow]) {
      expectEq(c.extensionsHeader, undefined, 'Sec-WebSocket-Extensions with --compression false');
      expectEq(c.ws.extensions, '', 'extensions in use with --compression false');
    }
  }
  for (const c of [byDefault, declined, narrow]) {
    await c.send('ping é');
    expectEq(await c.recvText('an echo'), 'ping é', 'echo');
    await c.close();
  }
});

check('deflate_echo_round_trips', async () => {
  for (const [label, options] of [
    ['offering deflate, compressing everything', DEFLATE_ALL],
    ['offering deflate, ws defaults', {}],
    ['declining deflate', { perMessageDeflate: false }],
    // a client that limits the server's window: its echoes come back uncompressed, still right
    ['server_max_window_bits=9', { perMessageDeflate: { serverMaxWindowBits: 9, threshold: 0 } }],
  ]) {
    const c = await Client.open('/echo', options);
    await echoRoundTrips(c, label);
    await c.close();
  }
});

check('deflate_pubsub_delivery', async () => {
  const topic = 'js-deflate';
  const subs = [
    await Client.open(`/ws?subscribe=${topic}`, DEFLATE_ALL),
    await Client.open(`/ws?subscribe=${topic}`, { perMessageDeflate: false }),
  ];
  const pub = await Client.open('/ws', DEFLATE_ALL);
  const data = JSON.stringify(Array.from({ length: 40 }, (_, i) => ({ sym: `ÉTÉ-${i}`, px: 100.25 + i, note: '日本語 ✓ 😀' })));
  expect(Buffer.byteLength(data) > 1024, 'the JSON data is over the minimum size');
  await pub.send(`{"type":"publish","topic":"${topic}","data":${data},"id":1}`);
  expectEq(await pub.recvJson('the publish ack'), { type: 'ack', id: 1 }, 'publish ack');
  const want = `{"type":"message","topic":"${topic}","data":${data}}`;
  for (const [k, s] of subs.entries()) {
    expectEq(await s.recvText(`the delivery (subscriber ${k})`), want, 'delivery (data verbatim)');
  }
  const payload = Buffer.concat([repetitiveBytes(64 * 1024), randomBytes(1024)]);
  await pub.send(binaryPublish(topic, payload));
  for (const [k, s] of subs.entries()) {
    const got = await s.recvBinary(`the binary delivery (subscriber ${k})`);
    expect(got.equals(binaryPublish(topic, payload)), `binary delivery differs (subscriber ${k})`);
  }
  for (const c of [...subs, pub]) await c.close();
});

check('deflate_metrics_count_compressions', async () => {
  const c = await Client.open('/echo');
  const text = repetitiveText(64 * 1024);
  const before = await deflateMetrics();
  await c.send(text);
  expectEq(await c.recvText('the echo'), text, 'echo');
  await c.close();
  const m = await deflateMetrics();
  const [sessions, compressions, bytesBefore, bytesAfter] = DEFLATE_METRICS.map((k) => m[k]);
  if (compressionOn()) {
    expect(sessions > 0, `wsgate_deflate_sessions_total ${sessions}`);
    expect(compressions > before.wsgate_compressions_total, `wsgate_compressions_total ${compressions}`);
    expect(bytesAfter > 0 && bytesAfter < bytesBefore, `payload bytes after ${bytesAfter}, before ${bytesBefore}`);
    return `${compressions} compressions, ${bytesBefore} -> ${bytesAfter} payload bytes`;
  }
  expectEq([sessions, compressions, bytesBefore, bytesAfter], [0, 0, 0, 0], 'deflate counters with --compression false');
});

// ---- the runner ---------------------------------------------------------------------------------

async function main() {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        url: { type: 'string' },
        'max-message-size': { type: 'string', default: String(64 * 1024 * 1024) },
        'check-timeout': { type: 'string', default: '60' },
        compression: { type: 'string', default: 'on' },
      },
      allowPositionals: true,
    });
  } catch (e) {
    console.error(`error: ${e.message}`);
    process.exit(2);
  }
  const { values, positionals } = parsed;
  let u;
  try {
    u = new URL(values.url);
  } catch {
    u = null;
  }
  if (!u || !['http:', 'https:'].includes(u.protocol)) {
    console.error(`error: --url must be http://HOST:PORT, not ${values.url}`);
    process.exit(2);
  }
  if (!['on', 'off'].includes(values.compression)) {
    console.error(`error: --compression must be on or off, not ${values.compression}`);
    process.exit(2);
  }
  ARGS = {
    compression: values.compression,
    url: `${u.protocol}//${u.host}`,
    wsUrl: `${u.protocol === 'https:' ? 'wss' : 'ws'}://${u.host}`,
    maxMessageSize: Number(values['max-message-size']),
    checkTimeoutMs: Number(values['check-timeout']) * 1000,
  };
  const unknown = positionals.filter((p) => !CHECKS.some((c) => c.name === p));
  if (unknown.length) {
    console.error(`error: no such checks: ${unknown.join(', ')}`);
    process.exit(2);
  }
  console.log(`ws ${wsVersion} (node ${process.version}) against ${ARGS.url}, compression ${ARGS.compression}`);
  await runChecks(CHECKS, positionals, ARGS.checkTimeoutMs);
}

main();
