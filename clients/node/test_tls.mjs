#!/usr/bin/env node
// wsgate over TLS with the Node `ws` client: wss:// and https:// against a gateway started with
// --tls-cert/--tls-key, whose certificate a test CA signed.
//
//     node clients/node/test_tls.mjs --url https://localhost:PORT --ca CA.pem
//
// The client trusts the CA of --ca and nothing else (the `ca` option; Node checks the hostname
// or address): the checks are the handshake (verified, and refused without the CA), echo of text
// and binary, pub/sub between two clients both ways, messages of a few MB, https endpoints, and
// a clean close (1000 both ways, counted by the gateway). Prints one line per check (PASS or
// FAIL, its name, and why it failed), then `N passed, N failed`, and exits 1 when any failed (2 on
// bad arguments). Every read has a timeout, so a message that never comes fails the check
// instead of hanging it. The same checks, with the same names, as clients/python/test_tls.py.

import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { binaryPublish, CheckFailed, Client as BaseClient, expect, expectEq, runChecks, withTimeout } from './harness.mjs';

const wsVersion = createRequire(import.meta.url)('ws/package.json').version;

const TIMEOUT_MS = 10_000; // the longest any single read waits
let ARGS;

/** A client of the TLS port that trusts the test CA only, and ends with no socket error. */
class Client extends BaseClient {
  /** Connects; `options` go to `ws` (and on to tls.connect); `base` replaces the --url. */
  static open(path = '/ws', { base = ARGS.wsUrl, ...options } = {}) {
    return this.connect(base + path, { maxPayload: 0, ca: ARGS.ca, ...options }, TIMEOUT_MS);
  }

  /** The TLSSocket under the upgrade. */
  get tls() {
    return this.upgrade?.socket;
  }

  async close() {
    await super.close();
    expect(this.errors.length === 0, `socket errors: ${this.errors.map((e) => e.message).join('; ')}`);
  }
}

/** About `n` bytes of UTF-8 text with 1- to 4-byte characters, ending in something random. */
function multibyteText(n) {
  const unit = 'wsgate tls é ö ß Ж € ✓ 日本語 한국어 😀 🚀 𝄞 ';
  const whole = Buffer.from(unit.repeat(Math.floor(n / Buffer.byteLength(unit)) + 1)).subarray(0, n);
  // a cut through a character leaves U+FFFD at the end: still valid text
  return whole.toString('utf8') + randomBytes(8).toString('hex');
}

/** GET path over https, trusting the test CA only: {status, body}. */
function httpsGet(path) {
  const u = new URL(ARGS.url);
  return withTimeout(
    new Promise((resolve, reject) => {
      const req = https.get(
        { host: u.hostname, port: u.port, path, ca: ARGS.ca, agent: false, headers: { Connection: 'close' } },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
    }),
    TIMEOUT_MS,
    `the answer to GET ${path}`,
  );
}

/** One sample of /metrics, by its full series name (`name{labels}`); 0 when absent. */
async function metric(series) {
  const r = await httpsGet('/metrics');
  expectEq(r.status, 200, 'GET /metrics');
  for (const line of r.body.split('\n')) {
    if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1));
  }
  return 0;
}

// ---- the checks ---------------------------------------------------------------------------------

const CHECKS = [];
const check = (name, fn) => CHECKS.push({ name, fn });

check('handshake_is_verified_against_the_test_ca', async () => {
  let c = await Client.open('/echo');
  expect(c.tls && c.tls.encrypted, 'no TLS socket under a wss:// connection');
  expect(c.tls.authorized, `not authorized: ${c.tls.authorizationError}`);
  const protocol = c.tls.getProtocol();
  expect(['TLSv1.2', 'TLSv1.3'].includes(protocol), `TLS version ${protocol}`);
  const peer = c.tls.getPeerCertificate();
  expectEq(peer.subject.CN, 'wsgate test server', "the server certificate's CN");
  expect(/DNS:localhost/.test(peer.subjectaltname), `SANs ${peer.subjectaltname}`);
  const cipher = c.tls.getCipher().name;
  await c.send('hello over wss');
  expectEq(await c.recvText('the echo'), 'hello over wss', 'echo');
  await c.close();
  // by IP address: the certificate's IP SAN
  const port = new URL(ARGS.url).port;
  c = await Client.open('/echo', { base: `wss://127.0.0.1:${port}` });
  await c.send('by address');
  expectEq(await c.recvText('the echo'), 'by address', 'echo over wss://127.0.0.1');
  await c.close();
  // without the test CA (Node's roots only) the certificate is refused
  let refused = null;
  try {
    c = await Client.open('/echo', { ca: undefined });
  } catch (e) {
    refused = e;
  }
  if (!refused) {
    await c.close();
    throw new CheckFailed('a client without the test CA accepted the certificate');
  }
  expect(/CERT|VERIFY|SIGNATURE/.test(refused.code || ''), `the refusal: ${refused.code} ${refused.message}`);
  return `${protocol}, ${cipher}; without the CA: ${refused.code}`;
});

check('echo_text_and_binary', async () => {
  const c = await Client.open('/echo');
  const sizes = [0, 1, 125, 126, 16_383, 16_384, 16_385, 65_535, 65_536, 1_000_000];
  for (const n of sizes) {
    const data = randomBytes(n);
    await c.send(data);
    const got = await c.recvBinary(`the echo of ${n} binary bytes`);
    expect(got.equals(data), `binary echo of ${n} bytes differs (${got.length} bytes came back)`);
    const text = multibyteText(n);
    await c.send(text);
    expectEq(await c.recvText(`the echo of ${n} bytes of text`), text, `text echo of about ${n} bytes`);
  }
  await c.close();
  return `${sizes.length} sizes up to ${sizes.at(-1)} bytes, text and binary`;
});

check('pubsub_between_two_clients', async () => {
  const a = await Client.open('/ws?subscribe=js-tls-a');
  const b = await Client.open('/ws');
  await b.acked({ type: 'subscribe', topic: 'js-tls-b', id: 1 });
  // a text publish from b reaches a, data verbatim; the publish is acked to b
  await b.send('{"type":"publish","topic":"js-tls-a","data":{"x":[1,2.50,"é"]},"id":2}');
  expectEq(await b.recvJson('the publish ack'), { type: 'ack', id: 2 }, 'publish ack');
  expectEq(await a.recvText('the text delivery'), '{"type":"message","topic":"js-tls-a","data":{"x":[1,2.50,"é"]}}', 'text delivery');
  // and the other way, binary, byte for byte
  const payload = randomBytes(70_000);
  await a.send(binaryPublish('js-tls-b', payload));
  expect((await b.recvBinary('the binary delivery')).equals(binaryPublish('js-tls-b', payload)), 'binary delivery differs');
  // in order: 1000 publishes from a to b
  const n = 1000;
  for (let i = 0; i < n; i++) await a.send(`{"type":"publish","topic":"js-tls-b","data":${i}}`);
  for (let i = 0; i < n; i++) {
    expectEq(await b.recvText(`delivery ${i}`), `{"type":"message","topic":"js-tls-b","data":${i}}`, 'in order');
  }
  await a.close();
  await b.close();
  return `text and binary both ways, ${n} in order`;
});

check('large_messages', async () => {
  const c = await Client.open('/echo');
  const data = randomBytes(4 * 1024 * 1024);
  const t = Date.now();
  await c.send(data);
  const got = await c.recvBinary('the echo of 4 MiB');
  const echoMs = Date.now() - t;
  expect(got.equals(data), `4 MiB binary echo differs (${got.length} bytes came back)`);
  const text = multibyteText(3_000_000);
  await c.send(text);
  expectEq(await c.recvText('the echo of 3 MB of text'), text, '3 MB text echo');
  await c.close();
  // through pub/sub: 3 MiB from one client to another
  const sub = await Client.open('/ws?subscribe=js-tls-large');
  const pub = await Client.open('/ws');
  const payload = randomBytes(3 * 1024 * 1024);
  await pub.send(binaryPublish('js-tls-large', payload));
  const delivered = await sub.recvBinary('the 3 MiB delivery');
  expect(delivered.equals(binaryPublish('js-tls-large', payload)), `3 MiB delivery differs (${delivered.length} bytes)`);
  await pub.close();
  await sub.close();
  return `4 MiB echo in ${(echoMs / 1000).toFixed(2)} s`;
});

check('https_endpoints', async () => {
  for (const [path, want] of [['/healthz', 'ok'], ['/readyz', 'ready']]) {
    const r = await httpsGet(path);
    expectEq([r.status, r.body.trim()], [200, want], `GET ${path}`);
  }
  const r = await httpsGet('/metrics');
  expectEq(r.status, 200, 'GET /metrics');
  expect(r.body.includes('wsgate_upgrades_total'), 'wsgate_upgrades_total in /metrics');
});

check('clean_close', async () => {
  const received = await metric('wsgate_closes_received_total{code="1000"}');
  const sent = await metric('wsgate_closes_sent_total{code="1000"}');
  const c = await Client.open('/ws?subscribe=js-tls-close');
  await c.acked({ type: 'subscribe', topic: 'js-tls-close-2', id: 1 });
  let tlsEnded = false;
  c.tls.once('end', () => (tlsEnded = true));
  const t = Date.now();
  c.ws.close(1000, 'bye');
  // ws emits 'close' once the TCP connection is over (its own timer ends it after 30 s)
  const info = await withTimeout(c.closed, TIMEOUT_MS, 'the close');
  const took = Date.now() - t;
  expectEq(info, { code: 1000, reason: '' }, "the gateway's close frame");
  expect(c.errors.length === 0, `socket errors: ${c.errors.map((e) => e.message).join('; ')}`);
  // the gateway ended the connection itself after the close (ws' 30 s timer did not)
  expect(tlsEnded, 'the gateway did not end the TLS connection');
  expect(took < TIMEOUT_MS / 2, `the close took ${took} ms`);
  expectEq((await metric('wsgate_closes_received_total{code="1000"}')) - received, 1, 'closes received (1000)');
  expectEq((await metric('wsgate_closes_sent_total{code="1000"}')) - sent, 1, 'closes sent (1000)');
  return `closed in ${took} ms`;
});

// ---- the runner ---------------------------------------------------------------------------------

async function main() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        url: { type: 'string' },
        ca: { type: 'string' },
        'check-timeout': { type: 'string', default: '60' },
      },
    }));
  } catch (e) {
    console.error(`error: ${e.message}`);
    process.exit(2);
  }
  let u;
  try {
    u = new URL(values.url);
  } catch {
    u = null;
  }
  if (!u || u.protocol !== 'https:') {
    console.error(`error: --url must be https://HOST:PORT, not ${values.url}`);
    process.exit(2);
  }
  if (!values.ca) {
    console.error('error: --ca CA.pem is required');
    process.exit(2);
  }
  ARGS = {
    url: `https://${u.host}`,
    wsUrl: `wss://${u.host}`,
    ca: fs.readFileSync(values.ca),
    checkTimeoutMs: Number(values['check-timeout']) * 1000,
  };
  console.log(`ws ${wsVersion} (node ${process.version}, OpenSSL ${process.versions.openssl}) against ${ARGS.url}`);
  await runChecks(CHECKS, [], ARGS.checkTimeoutMs);
}

main();
