// A 32 MiB binary message and a 4 MiB multi-byte UTF-8 text message round trip through /echo,
// from the page and from a dedicated Worker; the SHA-256 of what came back, computed where it
// arrived, must be the SHA-256 of what Node computes for the same deterministic bytes.

import { launch, gatewayPage, check, equal, sha256, genBytes, genText, PAGE_HELPERS } from "../lib.mjs";

const BINARY = 32 * 1024 * 1024;
const TEXT = 4 * 1024 * 1024;
const SEED = 0x5eed;

/** Runs in the page or in the Worker: both round trips, hashed where they arrive. */
async function roundTrips(base, binary, text, seed) {
  const out = {};
  const bytes = genBytes(binary, seed);
  for (const type of ["arraybuffer", "blob"]) {
    const ws = await wsOpen(wsUrl(base, "/echo"), type);
    const t0 = performance.now();
    ws.send(type === "arraybuffer" ? bytes.buffer : new Blob([bytes]));
    const back = await wsNext(ws, 60000);
    out[type] = {
      ms: performance.now() - t0,
      kind: Object.prototype.toString.call(back),
      size: (await toBytes(back)).length,
      sha: await sha256(back),
    };
    ws.close();
  }
  const s = genText(text);
  const ws = await wsOpen(wsUrl(base, "/echo"));
  const t0 = performance.now();
  ws.send(s);
  const back = await wsNext(ws, 60000);
  out.text = {
    ms: performance.now() - t0,
    kind: typeof back,
    same: back === s,
    chars: back.length,
    size: new TextEncoder().encode(back).length,
    sha: await sha256(back),
  };
  ws.close();
  return out;
}

export async function run({ url, note }) {
  const text = genText(TEXT);
  const expected = {
    binary: sha256(genBytes(BINARY, SEED)),
    text: sha256(Buffer.from(text, "utf8")),
    textBytes: Buffer.byteLength(text, "utf8"),
  };
  check(expected.textBytes >= TEXT && expected.textBytes < 2 * text.length, "the text is multi-byte UTF-8");
  const b = await launch();
  try {
    const { page } = b;
    await gatewayPage(page, url);
    const verify = (where, r) => {
      for (const type of ["arraybuffer", "blob"]) {
        equal(r[type].kind, type === "arraybuffer" ? "[object ArrayBuffer]" : "[object Blob]", `${where} ${type} type`);
        equal(r[type].size, BINARY, `${where} ${type} size`);
        equal(r[type].sha, expected.binary, `${where} 32 MiB binary as ${type}, SHA-256`);
      }
      equal(r.text.kind, "string", `${where} text type`);
      check(r.text.same, `${where}: the text came back identical`);
      equal(r.text.size, expected.textBytes, `${where} text UTF-8 bytes`);
      equal(r.text.sha, expected.text, `${where} 4 MiB text, SHA-256`);
      note(
        `${where}: 32 MiB binary back byte for byte as ArrayBuffer (${r.arraybuffer.ms.toFixed(0)} ms) and as Blob ` +
          `(${r.blob.ms.toFixed(0)} ms); ${(r.text.size / 1048576).toFixed(2)} MiB text of ${r.text.chars} UTF-16 units ` +
          `back identical (${r.text.ms.toFixed(0)} ms)`,
      );
    };

    const fromPage = await page.evaluate(
      async ({ src, base, binary, text, seed }) => {
        const f = new Function(`return (${src})`)();
        return f(base, binary, text, seed);
      },
      { src: roundTrips.toString(), base: url, binary: BINARY, text: TEXT, seed: SEED },
    );
    verify("page", fromPage);

    const fromWorker = await page.evaluate(
      async ({ helpers, src, base, binary, text, seed }) => {
        const code = `${helpers}\nconst roundTrips = ${src};\n` +
          `onmessage = async (e) => {\n` +
          `  try { postMessage({ ok: await roundTrips(...e.data), inWorker: typeof document === "undefined" }); }\n` +
          `  catch (err) { postMessage({ error: String(err && err.stack || err) }); }\n` +
          `};`;
        const worker = new Worker(URL.createObjectURL(new Blob([code], { type: "text/javascript" })));
        const answer = await new Promise((resolve, reject) => {
          worker.onmessage = (e) => resolve(e.data);
          worker.onerror = (e) => reject(new Error("worker error: " + e.message));
          worker.postMessage([base, binary, text, seed]);
        });
        worker.terminate();
        return answer;
      },
      { helpers: PAGE_HELPERS, src: roundTrips.toString(), base: url, binary: BINARY, text: TEXT, seed: SEED },
    );
    check(!fromWorker.error, "worker: " + fromWorker.error);
    check(fromWorker.inWorker, "ran in a dedicated Worker");
    verify("dedicated Worker", fromWorker.ok);
    check(b.errors.length === 0, "page errors: " + b.errors.join("; "));
  } finally {
    await b.close();
  }
}
