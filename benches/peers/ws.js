'use strict';
// A peer of wsgate for benches/peers/compare.sh, on the `ws` npm package (with bufferutil, as
// ws recommends), pub/sub kept in a Map of topic -> Set of sockets:
//   GET /echo                  every data message comes back with the same opcode
//   GET /ws[?subscribe=T]      subscribed to T at connect; a binary message [L][topic][payload]
//                              is sent unchanged to every socket in topics.get(topic)
// Usage: node ws.js [--port N] [--backlog N] [--max-payload BYTES] [--compression MODE]
//   prints "listening on 127.0.0.1:PORT" (0 picks a free port); --max-payload is ws's maxPayload,
//   64 MiB unless given (compare.sh's large scenario raises it). --compression turns on ws's
//   permessage-deflate (off unless given), compressing once per receiving socket (ws has no
//   shared compression):
//     no-context  answers server_no_context_takeover and client_no_context_takeover, as the
//                 gateway does by default: every message compressed on its own, those of 128
//                 bytes or more (the gateway's default minimum; smaller ones go plain)
//     context     ws's defaults: both sides keep their compression context across messages
//                 (ws then compresses every message, whatever its size)
//   Without --compression an offer of permessage-deflate is declined (no extension in the 101).
//   `require('ws')` also finds the ws of clients/node when NODE_PATH points there (the loadtest
//   tests do that when this folder's node_modules is not installed).
const http = require('http');
const { WebSocketServer } = require('ws');

let port = 0;
let backlog = 1024; // wsgate's default (Node's own is 511)
let maxPayload = 64 * 1024 * 1024;
let compression = 'off';
const usage = 'usage: node ws.js [--port N] [--backlog N] [--max-payload BYTES] [--compression no-context|context]';
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i += 2) {
  if (args[i] === '--port') port = Number(args[i + 1]);
  else if (args[i] === '--backlog') backlog = Number(args[i + 1]);
  else if (args[i] === '--max-payload') maxPayload = Number(args[i + 1]);
  else if (args[i] === '--compression' && ['no-context', 'context'].includes(args[i + 1])) compression = args[i + 1];
  else { console.error(usage); process.exit(2); }
}

let perMessageDeflate = false;
if (compression !== 'off') {
  const noContext = compression === 'no-context';
  perMessageDeflate = {
    threshold: 128,
    serverNoContextTakeover: noContext,
    clientNoContextTakeover: noContext,
    // ws limits the zlib jobs in flight; 10 is its default
    concurrencyLimit: 10,
  };
}
const options = { noServer: true, perMessageDeflate, maxPayload };
const echo = new WebSocketServer(options);
const pubsub = new WebSocketServer(options);
/** @type {Map<string, Set<import('ws').WebSocket>>} */
const topics = new Map();

function onEcho(ws) {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
}

function onPubSub(ws, topic) {
  ws.on('error', () => {});
  if (topic) {
    let set = topics.get(topic);
    if (!set) topics.set(topic, (set = new Set()));
    set.add(ws);
    ws.on('close', () => {
      set.delete(ws);
      if (set.size === 0 && topics.get(topic) === set) topics.delete(topic);
    });
  }
  ws.on('message', (data, isBinary) => {
    if (!isBinary || data.length < 2) return;
    const l = data[0];
    if (l === 0 || 1 + l > data.length) return;
    const subscribers = topics.get(data.toString('utf8', 1, 1 + l));
    if (!subscribers) return;
    for (const s of subscribers) s.send(data, { binary: true });
  });
}

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found\n');
});

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname === '/echo') {
    echo.handleUpgrade(req, socket, head, onEcho);
  } else if (url.pathname === '/ws') {
    const topic = url.searchParams.get('subscribe') || '';
    if (topic.length > 255 || topic.includes(',')) {
      socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    pubsub.handleUpgrade(req, socket, head, (ws) => onPubSub(ws, topic));
  } else {
    socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
  }
});

server.listen(port, '127.0.0.1', backlog, () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
