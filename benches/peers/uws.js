'use strict';
// A peer of wsgate for benches/peers/compare.sh, on uWebSockets.js (the native uWS binary that
// @trufflesuite/uws-js-unofficial ships), using uWS's own pub/sub:
//   GET /echo                  every data message comes back with the same opcode
//   GET /ws[?subscribe=T]      ws.subscribe(T) at open; a binary message [L][topic][payload]
//                              is app.publish(topic, message, true)
// Usage: node uws.js [--port N] [--max-payload BYTES] [--max-backpressure BYTES]
//                    [--compression shared] [--tls-cert FILE --tls-key FILE]
//   prints "listening on 127.0.0.1:PORT" (0 picks a free port); maxPayloadLength is 64 MiB and
//   maxBackpressure 8 MiB unless given (compare.sh's large scenario raises both: a message is
//   echoed whole, so the backpressure limit must hold it). `--compression shared` (or
//   UWS_COMPRESSION=shared in the environment) turns on permessage-deflate on both routes with
//   uWS.SHARED_COMPRESSOR | uWS.SHARED_DECOMPRESSOR: no context kept either way, so app.publish
//   (called with compress = true) compresses a message once for every subscriber, and echoes
//   are sent with compress = true. Without it compression is uWS.DISABLED: an offer is
//   declined. With --tls-cert and --tls-key (PEM) it is a uWS.SSLApp: wss:// and https://,
//   its TLS done by uSockets' OpenSSL/BoringSSL inside the binary.
const path = require('path');

// Load the native binary directly: the package's entry point silently falls back to a
// ws-based JavaScript imitation when the binary does not load, which is not what we measure.
const pkg = path.dirname(require.resolve('@trufflesuite/uws-js-unofficial/package.json'));
const binary = path.join(pkg, 'binaries',
  `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`);
const uWS = require(binary);

let port = 0;
let maxPayload = 64 * 1024 * 1024;
// like wsgate's --outbox-limit: a subscriber with 8 MiB queued is closed, not skipped
// (uWS's default skips, i.e. silently drops, what a slow receiver cannot take)
let maxBackpressure = 8 * 1024 * 1024;
let compression = process.env.UWS_COMPRESSION || 'off';
let tlsCert = null;
let tlsKey = null;
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i += 2) {
  if (args[i] === '--port') port = Number(args[i + 1]);
  else if (args[i] === '--max-payload') maxPayload = Number(args[i + 1]);
  else if (args[i] === '--max-backpressure') maxBackpressure = Number(args[i + 1]);
  else if (args[i] === '--compression') compression = args[i + 1];
  else if (args[i] === '--tls-cert') tlsCert = args[i + 1];
  else if (args[i] === '--tls-key') tlsKey = args[i + 1];
  else {
    compression = 'usage';
    break;
  }
}
if ((compression !== 'off' && compression !== 'shared') || (tlsCert === null) !== (tlsKey === null)) {
  console.error('usage: node uws.js [--port N] [--max-payload BYTES] [--max-backpressure BYTES] [--compression shared] [--tls-cert FILE --tls-key FILE]');
  process.exit(2);
}
const compress = compression === 'shared';

const common = {
  compression: compress ? uWS.SHARED_COMPRESSOR | uWS.SHARED_DECOMPRESSOR : uWS.DISABLED,
  maxPayloadLength: maxPayload,
  idleTimeout: 120,
  maxBackpressure,
  closeOnBackpressureLimit: true,
};

const app = tlsCert
  ? uWS.SSLApp({ cert_file_name: tlsCert, key_file_name: tlsKey })
  : uWS.App();

app.ws('/echo', {
  ...common,
  message: (ws, message, isBinary) => {
    ws.send(message, isBinary, compress);
  },
});

app.ws('/ws', {
  ...common,
  upgrade: (res, req, context) => {
    const topic = req.getQuery('subscribe') || '';
    if (topic.length > 255 || topic.includes(',')) {
      res.writeStatus('400 Bad Request').end('subscribe= takes one topic of 1 to 255 bytes\n');
      return;
    }
    res.upgrade(
      { topic },
      req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'),
      context,
    );
  },
  open: (ws) => {
    const { topic } = ws.getUserData();
    if (topic) ws.subscribe(topic);
  },
  message: (ws, message, isBinary) => {
    if (!isBinary || message.byteLength < 2) return;
    const l = new Uint8Array(message, 0, 1)[0];
    if (l === 0 || 1 + l > message.byteLength) return;
    // uWS takes the topic as bytes: no string is built per publish
    app.publish(new Uint8Array(message, 1, l), message, true, compress);
  },
});

app.any('/*', (res) => {
  res.writeStatus('404 Not Found').end('not found\n');
});

app.listen('127.0.0.1', port, (listenSocket) => {
  if (!listenSocket) {
    console.error(`uws.js: cannot listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  const tls = tlsCert ? ' (tls)' : '';
  console.log(`listening on 127.0.0.1:${uWS.us_socket_local_port(listenSocket)}${tls}`);
});
