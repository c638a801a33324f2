#!/usr/bin/env node
// wsgate's browser tests: headless Debian Chromium (playwright-core, /usr/bin/chromium) against
// a running gateway.
//
//   node browser/run.mjs --url http://127.0.0.1:PORT [--only NAME[,NAME]] [--bin PATH]
//                        [--pid PID] [--screenshot FILE] [--size BYTES]
//   node browser/run.mjs --url https://localhost:PORT --only tls --spki BASE64
//                        --untrusted https://localhost:PORT2
//
// --url         the gateway under test (the websocket, large, huge, compression and dashboard
//               tests)
// --bin         the wsgate binary: the client and recovery tests start and restart gateways of
//               their own, the compression test starts one with --compression false
// --pid         the gateway's process id: the close test sends it SIGTERM (close 1001)
// --screenshot  where the dashboard test saves its screenshot (default target/dashboard.png)
// --size        the message of the huge test, in bytes (default 256 MiB)
// --spki        the tls test: base64 SHA-256 of the SubjectPublicKeyInfo of the --url gateway's
//               certificate (an https:// URL), the one key Chromium is told to accept
// --untrusted   the tls test: another TLS gateway, whose certificate Chromium must refuse
//
// Prints one PASS or FAIL line per test and exits 1 when any failed. Each test has a time
// limit, so nothing hangs.

import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const here = path.dirname(fileURLToPath(import.meta.url));

const TESTS = {
  websocket: { file: "./tests/websocket.mjs", limit: 60_000, needs: ["url"] },
  large: { file: "./tests/large.mjs", limit: 90_000, needs: ["url"] },
  huge: { file: "./tests/huge.mjs", limit: 100_000, needs: ["url"] },
  close: { file: "./tests/close.mjs", limit: 45_000, needs: ["url", "pid"] },
  client: { file: "./tests/client.mjs", limit: 60_000, needs: ["bin"] },
  recovery: { file: "./tests/recovery.mjs", limit: 60_000, needs: ["bin"] },
  dashboard: { file: "./tests/dashboard.mjs", limit: 60_000, needs: ["url"] },
  compression: { file: "./tests/compression.mjs", limit: 90_000, needs: ["url", "bin"] },
  tls: { file: "./tests/tls.mjs", limit: 60_000, needs: ["url", "spki", "untrusted"] },
};

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    only: { type: "string" },
    bin: { type: "string" },
    pid: { type: "string" },
    screenshot: { type: "string", default: path.join(here, "..", "target", "dashboard.png") },
    size: { type: "string" },
    spki: { type: "string" },
    untrusted: { type: "string" },
  },
});

const names = values.only ? values.only.split(",").map((s) => s.trim()) : Object.keys(TESTS);
for (const name of names) {
  if (!TESTS[name]) {
    console.error(`no test ${name}; tests: ${Object.keys(TESTS).join(", ")}`);
    process.exit(2);
  }
}
const options = {
  url: values.url && values.url.replace(/\/+$/, ""),
  bin: values.bin,
  pid: values.pid && Number(values.pid),
  screenshot: path.resolve(values.screenshot),
  size: values.size && Number(values.size),
  spki: values.spki,
  untrusted: values.untrusted && values.untrusted.replace(/\/+$/, ""),
};

let failed = 0;
let passed = 0;
for (const name of names) {
  const test = TESTS[name];
  const missing = test.needs.filter((k) => !options[k]);
  const started = Date.now();
  const notes = [];
  const note = (line) => {
    notes.push(line);
    console.log(`  ${name}: ${line}`);
  };
  try {
    if (missing.length) throw new Error(`needs --${missing.join(", --")}`);
    const mod = await import(new URL(test.file, import.meta.url));
    let timer;
    const limit = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no result within ${test.limit / 1000} s`)), test.limit);
    });
    try {
      await Promise.race([mod.run({ ...options, note }), limit]);
    } finally {
      clearTimeout(timer);
    }
    passed += 1;
    console.log(`PASS ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name} (${((Date.now() - started) / 1000).toFixed(1)} s): ${e && e.stack ? e.stack : e}`);
  }
}
console.log(`${passed} passed, ${failed} failed`);
// a test that failed by its time limit may leave a browser behind: exit regardless
process.exit(failed ? 1 : 0);
