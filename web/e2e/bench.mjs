// The web client's benchmark (not a test): initial JS gzipped, time until a joined team's agent
// list shows on a throttled phone, and frame times while a 50,000-line agent view scrolls and
// while an agent streams 100 lines/s. Against a running `covibe standalone` with the fake agent:
//   node e2e/bench.mjs --base http://127.0.0.1:8080
// Prints a Markdown table (BENCHMARKS.md quotes it) and the raw figures as JSON.
import { DESKTOP, PHONE, arg, launch } from './browser.mjs';

const base = arg('--base', 'http://127.0.0.1:8080');
const WAIT = 120_000;

async function api(path, body, token) {
  const response = await fetch(base + path, {
    method: body ? 'POST' : 'GET',
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await response.json();
  if (!response.ok) throw new Error(`${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

async function agentDone(token, id) {
  for (;;) {
    const { agent } = await api(`/api/agent/${id}`, undefined, token);
    if (!['pending', 'starting', 'running'].includes(agent.status)) return agent;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** rAF deltas (ms) in the page while `during` runs there; the page's own clock. */
async function frames(page, during, arg) {
  return page.evaluate(
    async ([body, a]) => {
      const deltas = [];
      let last = performance.now();
      let running = true;
      const tick = (t) => {
        deltas.push(t - last);
        last = t;
        if (running) requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
      // eslint-disable-next-line no-new-func
      await new Function('a', `return (${body})(a)`)(a);
      running = false;
      return deltas.slice(1);
    },
    [during.toString(), arg],
  );
}

function summary(deltas) {
  const sorted = [...deltas].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
  const long = deltas.filter((d) => d > 50).length;
  return {
    frames: deltas.length,
    p50: +at(0.5).toFixed(1),
    p95: +at(0.95).toFixed(1),
    p99: +at(0.99).toFixed(1),
    max: +(sorted[sorted.length - 1] ?? 0).toFixed(1),
    over50ms: long,
  };
}

const browser = await launch();
const results = {};
try {
  // A team with a few finished agents, made over REST.
  const team = await api('/api/team/create', { name: 'Bench', email: 'bench@example.com', displayName: 'Bench' });
  const token = team.accessToken;
  for (let i = 0; i < 5; i++) await api('/api/agent/spawn', { task: `lines=20 agent ${i}` }, token);

  // Signed in through the UI once, so a reload below is a returning member on their phone.
  const context = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const device = await api('/api/auth/device', {}, token);
  await page.goto(base + '/');
  await page.getByRole('button', { name: 'Use a device code' }).click();
  await page.getByLabel('Device code').fill(device.code);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('li[data-agent-id]').first().waitFor();

  // 1. Initial JS: every script a load of the deck fetches, at its gzipped size on the wire.
  const scripts = new Set();
  page.on('response', (r) => {
    if (r.request().resourceType() === 'script') scripts.add(r.url());
  });
  await page.reload();
  await page.locator('li[data-agent-id]').first().waitFor();
  let gzipped = 0;
  for (const url of scripts) {
    const r = await fetch(url, { headers: { 'accept-encoding': 'gzip' } });
    const encoding = r.headers.get('content-encoding');
    const length = Number(r.headers.get('content-length') ?? 0) || (await r.arrayBuffer()).byteLength;
    if (encoding !== 'gzip') console.warn(`${url} is not served gzipped`);
    gzipped += length;
  }
  results.initialJsGzipKB = +(gzipped / 1024).toFixed(1);
  results.initialScripts = scripts.size;

  // 2. Time until the agent list shows on a throttled phone (4× slower CPU, a "slow 4G"
  // network: 150 ms RTT, 1.6 Mbit/s down): a first visit (a new browser profile holding only the
  // sign-in: no HTTP cache, no service worker), then a return visit (both populated).
  const signedIn = await context.storageState();
  await context.close();
  const phone = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 1, storageState: signedIn });
  const page2 = await phone.newPage();
  page2.setDefaultTimeout(WAIT);
  const cdp = await phone.newCDPSession(page2);
  await cdp.send('Network.enable');
  await cdp.send('Emulation.setCPUThrottlingRate', { rate: 4 });
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 150,
    downloadThroughput: (1.6 * 1024 * 1024) / 8,
    uploadThroughput: (750 * 1024) / 8,
  });
  const listShown = async () => {
    await page2.goto(base + '/', { waitUntil: 'commit' });
    await page2.locator('li[data-agent-id]').first().waitFor();
    return Math.round(await page2.evaluate(() => performance.now()));
  };
  results.agentListFirstVisitMs = await listShown();
  await page2.waitForTimeout(2000); // the service worker installs and caches the shell
  results.agentListReturnVisitMs = await listShown();
  await cdp.send('Emulation.setCPUThrottlingRate', { rate: 1 });
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });

  // 3. A 50,000-line agent: opened, then scrolled from the bottom to the top and back.
  const { agent: big } = await api('/api/agent/spawn', { task: 'lines=50000 a very long run' }, token);
  const done = await agentDone(token, big.id);
  await page2.setViewportSize(DESKTOP);
  await page2.goto(`${base}/agents/${big.id}`);
  await page2.waitForFunction(([id, n]) => window.covibe?.agentSeqs(id).length >= n, [big.id, done.outputSeq], { timeout: WAIT });
  results.scroll50k = summary(
    await frames(page2, async () => {
      const log = document.querySelector('[role="log"][aria-label="Agent output"]');
      const steps = 240;
      for (const direction of [-1, 1]) {
        for (let i = 0; i < steps; i++) {
          log.scrollTop += (direction * log.scrollHeight) / steps;
          await new Promise((r) => requestAnimationFrame(r));
        }
      }
    }),
  );

  // 4. An agent streaming 100 lines/s, watched live for its whole run.
  const { agent: live } = await api('/api/agent/spawn', { task: 'lines=1000 delay_ms=10 streaming' }, token);
  await page2.goto(`${base}/agents/${live.id}`);
  await page2.getByRole('log', { name: 'Agent output' }).waitFor();
  results.stream100 = summary(
    await frames(
      page2,
      async (id) => {
        const started = performance.now();
        while (performance.now() - started < 8000 && window.covibe.agentSeqs(id).length < 1000) {
          await new Promise((r) => setTimeout(r, 100));
        }
      },
      live.id,
    ),
  );
  await phone.close();
} finally {
  await browser.close();
}

const f = (s) => `p50 ${s.p50} ms, p95 ${s.p95} ms, p99 ${s.p99} ms, max ${s.max} ms, ${s.over50ms} of ${s.frames} frames over 50 ms`;
console.log(`| measure | result |
|---|---|
| initial JS, gzipped (budget 200 KB) | ${results.initialJsGzipKB} KB in ${results.initialScripts} scripts |
| agent list shown, throttled phone, first visit | ${results.agentListFirstVisitMs} ms |
| agent list shown, throttled phone, return visit | ${results.agentListReturnVisitMs} ms |
| frames, scrolling a 50,000-line agent (1280×800) | ${f(results.scroll50k)} |
| frames, an agent streaming 100 lines/s | ${f(results.stream100)} |`);
console.log(JSON.stringify(results));
