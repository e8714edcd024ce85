// Browser tests of the public status page (/status), registered into
// run.mjs's list and sharing its browser, helpers and server. Needs
// ADMIN_TOKEN (run.sh starts the server with it) to open an incident and
// schedule a maintenance through the admin API while a page watches.

export function statusTests({ test, open, axe, raw, assert, shoot, browser, base, measured, DESKTOP, PHONE }) {
  const token = process.env.ADMIN_TOKEN;

  async function admin(path, body) {
    const r = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const json = await r.json();
    assert(r.status === 201, `${path} → ${r.status}: ${JSON.stringify(json)}`);
    return json;
  }

  test('status page: no inline code, headers, first load under 50 KB, first byte', async () => {
    const page = await raw(`${base}/status`);
    assert(page.status === 200, `GET /status → ${page.status}`);
    const h = page.headers;
    assert(h['content-type'] === 'text/html; charset=utf-8', `content-type ${h['content-type']}`);
    assert((h['content-security-policy'] || '').includes("script-src 'self'"), 'CSP');
    const html = page.body.toString();
    assert(!/<script(?![^>]*\bsrc=)[^>]*>/i.test(html), 'no inline script');
    assert(!/<style|\sstyle=/i.test(html), 'no inline style');
    assert(html.includes('All Systems Operational') || html.includes('System'), 'banner in words');
    assert(html.includes('action="/status/subscribe"'), 'subscription form (no JavaScript needed)');
    const { context, page: p } = await open();
    const cdp = await context.newCDPSession(p);
    await cdp.send('Network.enable');
    await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
    let total = 0;
    const sizes = [];
    const urls = new Map();
    cdp.on('Network.responseReceived', (e) => urls.set(e.requestId, e.response.url));
    cdp.on('Network.loadingFinished', (e) => { total += e.encodedDataLength; sizes.push(`${urls.get(e.requestId)} ${e.encodedDataLength}`); });
    await p.goto(`${base}/status`, { waitUntil: 'load' });
    await p.waitForSelector('#live:not([hidden])');
    // The live stream stays open (its bytes are not a finished load); what
    // loaded is the page and its assets.
    measured.statusFirstLoadBytes = total;
    measured.statusFirstLoadFiles = sizes;
    console.log(`# status first load: ${total} bytes over the wire in ${sizes.length} responses`);
    for (const s of sizes) console.log(`#   ${s}`);
    assert(total < 50_000, `status first load ${total} bytes ≥ 50 KB`);
    await context.close();
    // First byte over 200 sequential requests (no compression asked).
    const times = [];
    for (let i = 0; i < 200; i++) {
      const t0 = process.hrtime.bigint();
      await new Promise((resolve, reject) => {
        import('node:http').then(({ default: http }) => {
          http.get(`${base}/status`, (res) => {
            res.once('data', () => times.push(Number(process.hrtime.bigint() - t0) / 1e6));
            res.on('end', resolve);
            res.resume();
          }).on('error', reject);
        });
      });
    }
    times.sort((a, b) => a - b);
    const p50 = times[Math.floor(times.length * 0.5)];
    const p99 = times[Math.floor(times.length * 0.99)];
    measured.statusTtfbMs = { p50, p99 };
    console.log(`# status first byte (debug build, keep-alive off): p50 ${p50.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms`);
    assert(p99 < 50, `status first byte p99 ${p99} ms`);
  });

  test('status page updates live over SSE; without JavaScript it shows the same', async () => {
    const { context, page } = await open();
    await page.goto(`${base}/status`, { waitUntil: 'load' });
    await page.waitForSelector('#live:not([hidden])');
    assert(await page.locator('#active').isHidden(), 'no active incident yet');
    const inc = await admin('/admin/v1/incidents', {
      name: 'Chat answers are slow',
      status: 'investigating',
      message: 'We are looking into slow answers.',
      components: { storage: 'degraded_performance' },
    });
    await page.waitForSelector('#active:not([hidden]) >> text=Chat answers are slow', { timeout: 10_000 });
    await page.waitForSelector('#banner >> text=Degraded System Service', { timeout: 10_000 });
    const state = await page.locator('#c-storage .state').innerText();
    assert(state.includes('Degraded performance'), `component state in words: ${state}`);
    await admin(`/admin/v1/incidents/${inc.id}/updates`, { status: 'identified', message: 'A slow disk; moving the data.' });
    await page.waitForSelector('#active >> text=A slow disk; moving the data.', { timeout: 10_000 });
    await shoot(page, 'status-live-incident');
    await context.close();
    const noJs = await browser.newContext({ viewport: DESKTOP, javaScriptEnabled: false });
    const p2 = await noJs.newPage();
    await p2.goto(`${base}/status`);
    assert(await p2.locator('#active').isVisible(), 'incident shown without JavaScript');
    assert((await p2.locator('#active').innerText()).includes('A slow disk'), 'updates shown without JavaScript');
    assert(await p2.locator('#live').isHidden(), 'no live claim without JavaScript');
    await noJs.close();
    await admin(`/admin/v1/incidents/${inc.id}/updates`, { status: 'resolved', message: 'Fixed.' });
    const soon = new Date(Date.now() + 86_400_000).toISOString();
    const later = new Date(Date.now() + 2 * 86_400_000).toISOString();
    await admin('/admin/v1/maintenances', { name: 'Storage upgrade', scheduled_for: soon, scheduled_until: later, message: 'Planned.', components: ['storage'] });
  });

  test('status page accessibility: axe-core finds 0 violations (light, dark, phone)', async () => {
    for (const [label, options] of [
      ['light desktop', { colorScheme: 'light' }],
      ['dark desktop', { colorScheme: 'dark' }],
      ['light phone', { colorScheme: 'light', viewport: PHONE, isMobile: true, hasTouch: true }],
      ['dark phone', { colorScheme: 'dark', viewport: PHONE, isMobile: true, hasTouch: true }],
    ]) {
      const context = await browser.newContext({ viewport: DESKTOP, ...options, bypassCSP: true, reducedMotion: 'reduce' });
      const page = await context.newPage();
      await page.goto(`${base}/status`, { waitUntil: 'load' });
      await page.waitForSelector('#live:not([hidden])');
      await axe(page, `status ${label}`);
      await shoot(page, `status-${label.replace(' ', '-')}`);
      await context.close();
    }
  });
}
