// One 256 MiB binary message from the page through /echo, back byte for byte, as Chromium sends
// it (frames of 131,000 bytes). What the gateway's memory does meanwhile is checked by the
// caller: gateway/tests/browser.rs reads its peak resident set (the promise: one copy
// of the message, whatever the sender's pacing or fragmentation).

import { launch, gatewayPage, check, equal } from "../lib.mjs";

const SIZE = 256 * 1024 * 1024;
const SEED = 0x5eed;

export async function run({ url, note, size }) {
  const bytes = size || SIZE;
  const b = await launch();
  try {
    const { page } = b;
    await gatewayPage(page, url);
    const r = await page.evaluate(
      async ({ base, size, seed }) => {
        const sent = genBytes(size, seed);
        const ws = await wsOpen(wsUrl(base, "/echo"));
        const t0 = performance.now();
        ws.send(sent);
        const back = await wsNext(ws, 90000);
        const ms = performance.now() - t0;
        ws.close();
        const got = new Uint8Array(back);
        let first = -1;
        if (got.length === size) {
          // word by word, then the tail: byte for byte, without hashing 512 MiB
          const words = size >>> 2;
          const a = new Uint32Array(sent.buffer, 0, words);
          const g = new Uint32Array(back, 0, words);
          for (let i = 0; i < words && first < 0; i++) if (a[i] !== g[i]) first = i * 4;
          for (let i = words * 4; i < size && first < 0; i++) if (sent[i] !== got[i]) first = i;
        }
        return { ms, kind: Object.prototype.toString.call(back), size: got.length, first };
      },
      { base: url, size: bytes, seed: SEED },
    );
    equal(r.kind, "[object ArrayBuffer]", "the echo's type");
    equal(r.size, bytes, "the echo's size");
    check(r.first < 0, `the echo differs from byte ${r.first} on`);
    check(b.errors.length === 0, "page errors: " + b.errors.join("; "));
    note(
      `${(bytes / 1048576).toFixed(0)} MiB binary message back byte for byte in ${r.ms.toFixed(0)} ms ` +
        `(${(bytes / r.ms / 1e6).toFixed(2)} GB/s)`,
    );
  } finally {
    await b.close();
  }
}
