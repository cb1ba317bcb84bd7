#!/usr/bin/env node
// Drives page/ in headless Chromium against one TURN server and prints a JSON verdict.
//
//   node driver.js TURN_URL USERNAME CREDENTIAL [--timeout SECONDS] [--chromium PATH] [--verbose] [--peer]
//
// With --peer, the page is one side of a call with an outside endpoint (page/peer.html): the
// driver prints the page's offer as a line `OFFER <JSON string>` on stdout, reads the other
// side's answer as a line `ANSWER <JSON string>` from stdin, and hands it to the page.
//
// e.g. node driver.js 'turn:127.0.0.1:3478?transport=udp' '1767225600:abc' 'base64hmac=='
//
// Serves page/ from a local HTTP server on 127.0.0.1:0, launches Chromium (Debian's
// /usr/bin/chromium by default, or $CHROMIUM) headless with a fresh profile and fake
// media devices, waits for the page's window.umbraResult, prints it as JSON on stdout and
// exits 0 only if every check passed (1: a check failed or timed out, 2: usage error).
// The page's only ICE server is the TURN URL given here: nothing else is contacted.
"use strict";

const fs = require("fs");
const http = require("http");
const os = require("os");
const path = require("path");

function usage(msg) {
  if (msg) process.stderr.write(`error: ${msg}\n`);
  process.stderr.write(
    "usage: node driver.js TURN_URL USERNAME CREDENTIAL [--timeout SECONDS] [--chromium PATH] [--verbose]\n",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    timeoutS: 60,
    chromium: process.env.CHROMIUM || "/usr/bin/chromium",
    verbose: false,
    peer: false,
  };
  const pos = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--timeout") opts.timeoutS = Number(argv[++i]);
    else if (a === "--chromium") opts.chromium = argv[++i];
    else if (a === "--verbose" || a === "-v") opts.verbose = true;
    else if (a === "--peer") opts.peer = true;
    else if (a === "--help" || a === "-h") usage();
    else if (a.startsWith("--")) usage(`unknown option ${a}`);
    else pos.push(a);
  }
  if (pos.length !== 3) usage("need TURN_URL USERNAME CREDENTIAL");
  [opts.turnUrl, opts.user, opts.pass] = pos;
  if (!/^turns?:/.test(opts.turnUrl)) usage(`not a TURN URL: ${opts.turnUrl}`);
  if (!(opts.timeoutS > 0)) usage("bad --timeout");
  return opts;
}

// Chromium flags: headless, no GPU, no QUIC, and nothing that phones home; fake
// microphone (a beep) with the permission prompt auto-accepted.
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
];

const PAGE_DIR = path.join(__dirname, "page");
const FILES = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/index.html": ["index.html", "text/html; charset=utf-8"],
  "/test.js": ["test.js", "text/javascript; charset=utf-8"],
  "/peer.html": ["peer.html", "text/html; charset=utf-8"],
  "/peer.js": ["peer.js", "text/javascript; charset=utf-8"],
};

// --peer: the answer arrives on stdin as `ANSWER <JSON string>`.
function readAnswer() {
  return new Promise((resolve, reject) => {
    let buf = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (chunk) => {
      buf += chunk;
      // Only whole lines: the answer may arrive in several chunks.
      const lines = buf.split("\n");
      lines.pop();
      const line = lines.find((l) => l.startsWith("ANSWER "));
      if (line) {
        try {
          resolve(JSON.parse(line.slice(7)));
        } catch (e) {
          reject(new Error(`the answer line is not JSON: ${e.message}`));
        }
      }
    });
    process.stdin.on("end", () => reject(new Error("stdin closed before an answer")));
  });
}

function serve() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    const entry = FILES[url.pathname];
    if (!entry) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": entry[1], "cache-control": "no-store" });
    res.end(fs.readFileSync(path.join(PAGE_DIR, entry[0])));
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let chromium;
  try {
    ({ chromium } = require("playwright-core"));
  } catch (e) {
    process.stderr.write("error: playwright-core is not installed; run `npm ci` in tests/webrtc\n");
    process.exit(2);
  }
  if (!fs.existsSync(opts.chromium)) usage(`no Chromium at ${opts.chromium} (apt-get install chromium)`);

  const result = { ok: false, turnUrl: opts.turnUrl };
  const consoleLines = [];
  let server = null;
  let context = null;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "umbra-webrtc-profile-"));

  const cleanup = async () => {
    if (context) await context.close().catch(() => {});
    if (server) server.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  const watchdog = setTimeout(async () => {
    result.error = `timed out after ${opts.timeoutS} s`;
    result.console = consoleLines;
    process.stdout.write(JSON.stringify(result, null, 2) + "\n");
    await cleanup().catch(() => {});
    process.exit(1);
  }, opts.timeoutS * 1000);

  try {
    server = await serve();
    const { port } = server.address();
    const pageTimeoutMs = Math.max(5000, opts.timeoutS * 1000 - 10000);
    const q = new URLSearchParams({
      turn: opts.turnUrl,
      user: opts.user,
      pass: opts.pass,
      timeout: String(pageTimeoutMs),
    });
    const pageUrl = `http://127.0.0.1:${port}/${opts.peer ? "peer.html" : ""}?${q}`;

    context = await chromium.launchPersistentContext(profile, {
      executablePath: opts.chromium,
      headless: true,
      args: opts.peer ? [...CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"] : CHROMIUM_ARGS,
      timeout: 20000,
    });
    await context.grantPermissions(["microphone"], { origin: `http://127.0.0.1:${port}` }).catch(() => {});
    const page = context.pages()[0] || (await context.newPage());
    page.on("console", (m) => {
      consoleLines.push(m.text());
      if (opts.verbose) process.stderr.write(`[page] ${m.text()}\n`);
    });
    page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));

    await page.goto(pageUrl, { timeout: 10000 });
    if (opts.peer) {
      const offer = await (
        await page.waitForFunction(() => window.umbraOffer || window.umbraResult, null, { timeout: 30000, polling: 100 })
      ).jsonValue();
      if (typeof offer === "string") {
        process.stdout.write(`OFFER ${JSON.stringify(offer)}\n`);
        const answer = await readAnswer();
        await page.evaluate((a) => {
          window.umbraAnswer = a;
        }, answer);
      }
    }
    await page.waitForFunction(() => window.umbraResult !== null && window.umbraResult !== undefined, null, {
      timeout: pageTimeoutMs + 2000,
      polling: 200,
    });
    const pageResult = await page.evaluate(() => window.umbraResult);
    Object.assign(result, pageResult);
    result.browser = context.browser() ? context.browser().version() : undefined;
  } catch (e) {
    result.ok = false;
    result.error = result.error || String(e && e.message ? e.message : e);
  }
  clearTimeout(watchdog);
  if (!result.ok) result.console = consoleLines;
  await cleanup();
  process.stdout.write(JSON.stringify(result, null, 2) + "\n");
  const failed = (result.checks || []).filter((c) => !c.ok).map((c) => c.name);
  process.stderr.write(
    result.ok
      ? `webrtc: PASS (${(result.checks || []).length} checks, ${result.elapsedMs} ms)\n`
      : `webrtc: FAIL ${result.error ? "(" + result.error + ") " : ""}${failed.join("; ")}\n`,
  );
  process.exit(result.ok ? 0 : 1);
}

main().catch((e) => {
  process.stderr.write(`driver error: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
