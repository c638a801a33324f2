'use strict';
// A peer of wsgate for benches/peers/compare.sh, on uWebSockets.js (the native uWS binary that
// @trufflesuite/uws-js-unofficial ships), using uWS's own pub/sub:
//   GET /echo                  every data message comes back with the same opcode
//   GET /ws[?subscribe=T]      ws.subscribe(T) at open; a binary message [L][topic][payload]
//                              is app.publish(topic, message, true)
// Usage: node uws.js [--port N] [--max-payload BYTES] [--max-backpressure BYTES]
//   prints "listening on 127.0.0.1:PORT" (0 picks a free port); maxPayloadLength is 64 MiB and
//   maxBackpressure 8 MiB unless given (compare.sh's large scenario raises both: a message is
//   echoed whole, so the backpressure limit must hold it)
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
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i += 2) {
  if (args[i] === '--port') port = Number(args[i + 1]);
  else if (args[i] === '--max-payload') maxPayload = Number(args[i + 1]);
  else if (args[i] === '--max-backpressure') maxBackpressure = Number(args[i + 1]);
  else {
    console.error('usage: node uws.js [--port N] [--max-payload BYTES] [--max-backpressure BYTES]');
    process.exit(2);
  }
}

const common = {
  compression: uWS.DISABLED,
  maxPayloadLength: maxPayload,
  idleTimeout: 120,
  maxBackpressure,
  closeOnBackpressureLimit: true,
};

const app = uWS.App();

app.ws('/echo', {
  ...common,
  message: (ws, message, isBinary) => {
    ws.send(message, isBinary);
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
    app.publish(new Uint8Array(message, 1, l), message, true);
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
  console.log(`listening on 127.0.0.1:${uWS.us_socket_local_port(listenSocket)}`);
});
