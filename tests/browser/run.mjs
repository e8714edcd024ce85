// End-to-end tests of the chat page in Debian's headless Chromium
// (driven by playwright-core), with axe-core and Lighthouse.
//
// Usage: node run.mjs BASE_URL   (e.g. http://127.0.0.1:PORT; run.sh starts the server)
// Env: CANARY — a string every message sent here contains (run.sh then checks
// that it is nowhere in the server's log or working directory).
// Prints `ok`/`FAIL` per test and, last, `node: N passed, M failed`.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { statusTests } from './status.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const base = (process.argv[2] || '').replace(/\/v1\/?$/, '').replace(/\/$/, '');
if (!base) throw new Error('usage: node run.mjs BASE_URL');
const canary = process.env.CANARY || 'orinari-canary';
const artifacts = path.join(here, 'artifacts');
await mkdir(artifacts, { recursive: true });
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const ANSWER_MS = 90_000;

const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...FLAGS, '--headless'], headless: true });
const axeSource = await readFile(path.join(here, 'node_modules/axe-core/axe.min.js'), 'utf8');
const problems = []; // CSP violations and script errors seen on normal pages
const measured = {};

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// A context with the page's real CSP; records console errors and page errors.
async function open(options = {}) {
  const context = await browser.newContext({ viewport: DESKTOP, ...options });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  return { context, page };
}

const q = (page) => ({
  messages: () => page.locator('#log > li'),
  assistant: () => page.locator('#log > li.msg-assistant'),
});

async function send(page, text) {
  await page.fill('#message', text);
  await page.click('#send');
}

async function waitAnswered(page) {
  await page.waitForSelector('#log > li.msg-assistant:last-child:not([aria-busy])', { timeout: ANSWER_MS });
  await page.waitForSelector('#send:not([hidden])', { timeout: ANSWER_MS });
}

// Without JavaScript a submit is a navigation that lasts as long as the
// model takes to answer in full.
async function submitForm(page, selector) {
  const target = `${new URL(page.url()).origin}/`;
  await Promise.all([
    page.waitForResponse((r) => r.url() === target && r.request().method() === 'POST', { timeout: ANSWER_MS }),
    page.click(selector, { timeout: ANSWER_MS }),
  ]);
  await page.waitForLoadState('load');
}

async function axe(page, label) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const v = result.violations.map((x) => `${x.id} (${x.impact}): ${x.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  assert(v.length === 0, `axe ${label}: ${v.length} violations:\n  ${v.join('\n  ')}`);
}

function raw(url, headers = {}) {
  return new Promise((resolve, reject) => {
    http.get(url, { headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    }).on('error', reject);
  });
}

async function shoot(page, name) {
  await page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
}

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('page and assets: caching, compression and security headers', async () => {
  const page = await raw(`${base}/`);
  assert(page.status === 200, `GET / → ${page.status}`);
  const h = page.headers;
  assert(h['content-type'] === 'text/html; charset=utf-8', `content-type ${h['content-type']}`);
  assert(h['cache-control'] === 'no-cache', `page cache-control ${h['cache-control']}`);
  assert(h.etag, 'page has an ETag');
  const csp = h['content-security-policy'] || '';
  for (const d of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"]) assert(csp.includes(d), `CSP lacks ${d}: ${csp}`);
  assert(!/unsafe-inline|unsafe-eval/.test(csp), 'CSP allows inline or eval');
  assert(h['x-content-type-options'] === 'nosniff', 'nosniff');
  assert(h['referrer-policy'] === 'no-referrer', 'referrer-policy');
  assert(h['permissions-policy'], 'permissions-policy');
  assert(h['cross-origin-opener-policy'] === 'same-origin', 'COOP');
  assert(!h['set-cookie'], 'no cookies');
  const html = page.body.toString();
  assert(!/<script(?![^>]*\bsrc=)[^>]*>/i.test(html), 'no inline script');
  assert(!/<style|\sstyle=/i.test(html), 'no inline style');
  const again = await raw(`${base}/`, { 'if-none-match': h.etag });
  assert(again.status === 304 && again.body.length === 0, `revalidation → ${again.status}`);
  const assets = [...html.matchAll(/(?:href|src|data-markdown)="(\/assets\/[^"]+)"/g)].map((m) => m[1]);
  assert(assets.length >= 4, `asset links: ${assets}`);
  for (const a of new Set(assets)) {
    assert(/\.[0-9a-f]{16}\.(js|css|svg)$/.test(a), `content-hashed name: ${a}`);
    const r = await raw(`${base}${a}`);
    assert(r.status === 200, `${a} → ${r.status}`);
    assert(r.headers['cache-control'] === 'public, max-age=31536000, immutable', `${a} cache-control ${r.headers['cache-control']}`);
    assert(r.headers['content-security-policy'] && r.headers['x-content-type-options'] === 'nosniff', `${a} security headers`);
  }
  const js = assets.find((a) => a.endsWith('.js'));
  for (const enc of ['br', 'gzip']) {
    for (const url of [`${base}/`, `${base}${js}`]) {
      const r = await raw(url, { 'accept-encoding': enc });
      assert(r.headers['content-encoding'] === enc, `${url} with ${enc}: content-encoding ${r.headers['content-encoding']}`);
    }
  }
  const missing = await raw(`${base}/assets/chat.0000000000000000.js`);
  assert(missing.status === 404, `unknown asset → ${missing.status}`);
  const api = await raw(`${base}/v1/models`, { 'accept-encoding': 'br, gzip' });
  // API responses are not compressed (clients expect plain JSON and SSE) and
  // carry the baseline headers: nothing may load from or frame them.
  assert(!api.headers['content-encoding'], '/v1 responses are not compressed');
  assert(api.headers['content-security-policy'] === "default-src 'none'; frame-ancestors 'none'", `/v1 CSP: ${api.headers['content-security-policy']}`);
  assert(api.headers['x-content-type-options'] === 'nosniff', '/v1 nosniff');
});

test('first load is under 50 KB and loads no Markdown code until needed', async () => {
  const { context, page } = await open();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  const urls = new Map();
  let total = 0;
  cdp.on('Network.responseReceived', (e) => urls.set(e.requestId, e.response.url));
  const sizes = [];
  cdp.on('Network.loadingFinished', (e) => { total += e.encodedDataLength; sizes.push(`${urls.get(e.requestId)} ${e.encodedDataLength}`); });
  const t0 = Date.now();
  await page.goto(`${base}/`, { waitUntil: 'networkidle' });
  const timing = await page.evaluate(() => {
    const n = performance.getEntriesByType('navigation')[0];
    return { ttfb: n.responseStart - n.requestStart, load: n.loadEventEnd - n.startTime };
  });
  measured.firstLoadBytes = total;
  measured.firstLoadFiles = sizes;
  measured.ttfbMs = timing.ttfb;
  measured.loadMs = timing.load;
  console.log(`# first load: ${total} bytes over the wire in ${sizes.length} responses (${Date.now() - t0} ms wall); TTFB ${timing.ttfb.toFixed(1)} ms, load ${timing.load.toFixed(0)} ms`);
  for (const s of sizes) console.log(`#   ${s}`);
  assert(total < 50_000, `first load ${total} bytes ≥ 50 KB`);
  assert(!sizes.some((s) => s.includes('/markdown.')), 'markdown module is split out of the first load');
  await context.close();
});

test('streams token by token; Stop cancels the answer', async () => {
  const { context, page } = await open();
  await page.goto(`${base}/`);
  await send(page, `${canary} Write a long story about a dragon who learns to cook. Make it at least ten paragraphs.`);
  await page.waitForSelector('#stop:not([hidden])');
  const body = page.locator('#log > li.msg-assistant .body');
  const lengths = [];
  const deadline = Date.now() + ANSWER_MS;
  while (Date.now() < deadline) {
    const n = (await body.textContent()).length;
    if (n && n !== lengths.at(-1)) lengths.push(n);
    if (lengths.length >= 4 && n > 40) break;
    await page.waitForTimeout(25);
  }
  assert(lengths.length >= 4, `tokens arrived in ${lengths.length} steps: ${lengths}`);
  assert(lengths.every((n, i) => i === 0 || n > lengths[i - 1]), `text only grows: ${lengths}`);
  assert(await page.locator('#log > li.msg-assistant[aria-busy="true"]').count() === 1, 'busy while streaming');
  await shoot(page, 'desktop-streaming');
  await page.click('#stop');
  await page.waitForSelector('#send:not([hidden])');
  await page.waitForSelector('#log .stopped');
  const frozen = await page.locator('#log > li.msg-assistant').getAttribute('data-text');
  await page.waitForTimeout(1500);
  const later = await page.locator('#log > li.msg-assistant').getAttribute('data-text');
  assert(frozen && frozen === later, 'no text after Stop');
  assert(await page.locator('#status').textContent() === 'Stopped.', 'Stop is announced');
  const stored = await page.evaluate(() => JSON.parse(sessionStorage.getItem('orinari.chat')));
  assert(stored.length === 2 && stored[1].content === frozen, 'the partial answer is kept in the tab');
  await context.close();
});

test('whole answer with Markdown, copy, regenerate, clear; nothing retained', async () => {
  const { context, page } = await open();
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  // Bound answers here (the page asks for up to 512 tokens) so a rambling
  // answer cannot stretch the test; the request still streams unchanged.
  await page.route('**/v1/chat/completions', (route) => {
    const body = JSON.parse(route.request().postData());
    route.continue({ postData: JSON.stringify({ ...body, max_tokens: 48 }) });
  });
  const setCookies = [];
  page.on('response', (r) => { if (r.headers()['set-cookie']) setCookies.push(r.url()); });
  await page.goto(`${base}/`);
  await send(page, `${canary} Say hello in one short sentence.`);
  await waitAnswered(page);
  assert(await q(page).messages().count() === 2, 'two messages');
  assert(await page.locator('#log > li.msg-assistant .body.md').count() === 1, 'answer rendered as Markdown');
  const answer = await page.locator('#log > li.msg-assistant').getAttribute('data-text');
  assert(answer && answer.length > 0, 'an answer');
  const status = await page.locator('#status').textContent();
  assert(status.startsWith('The assistant answered:'), `announced once, at the end: ${status}`);
  await page.click('#log > li.msg-assistant .who button');
  const clip = await page.evaluate(() => navigator.clipboard.readText());
  assert(clip === answer, 'Copy puts the answer on the clipboard');
  await shoot(page, 'desktop-answer');
  await page.setViewportSize(PHONE);
  await shoot(page, 'phone-answer');
  await page.setViewportSize(DESKTOP);
  // What the tab keeps: sessionStorage only.
  const kept = await page.evaluate(() => ({ local: localStorage.length, cookie: document.cookie, session: Object.keys(sessionStorage) }));
  assert(kept.local === 0 && kept.cookie === '' && kept.session.join() === 'orinari.chat', `storage: ${JSON.stringify(kept)}`);
  assert((await context.cookies()).length === 0 && setCookies.length === 0, 'no cookies');
  await page.reload();
  assert(await q(page).messages().count() === 2, 'a reload in the same tab keeps the conversation');
  await page.click('#regenerate');
  await page.waitForSelector('#stop:not([hidden])');
  await waitAnswered(page);
  assert(await q(page).messages().count() === 2, 'regenerate replaces the answer');
  await page.click('#clear');
  assert(await q(page).messages().count() === 0, 'clear empties the log');
  assert(await page.evaluate(() => sessionStorage.length) === 0, 'clear empties sessionStorage');
  // A new tab starts empty: nothing outlives the tab.
  await send(page, `${canary} Hi`);
  await waitAnswered(page);
  const other = await context.newPage();
  await other.goto(`${base}/`);
  assert(await q(other).messages().count() === 0, 'a new tab sees nothing');
  await context.close();
});

test('keyboard only: skip link, Enter sends, Tab to Stop, focus visible', async () => {
  const { context, page } = await open();
  await page.goto(`${base}/`);
  await page.keyboard.press('Tab');
  assert(await page.evaluate(() => document.activeElement.className) === 'skip', 'first Tab reaches the skip link');
  const outline = () => page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert(await outline() !== 'none', 'skip link focus is visible');
  await page.keyboard.press('Enter');
  assert(await page.evaluate(() => document.activeElement.id) === 'message', 'skip link moves focus to the message box');
  await page.keyboard.type(`${canary} Count from one to fifty in words.`);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#stop:not([hidden])');
  let reached = false;
  for (let i = 0; i < 6 && !reached; i++) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => document.activeElement.id) === 'stop';
  }
  assert(reached, 'Tab reaches Stop');
  assert(await outline() !== 'none', 'Stop focus is visible');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#send:not([hidden])');
  assert(await page.evaluate(() => document.activeElement.id) === 'message', 'focus returns to the message box');
  await context.close();
});

test('Markdown rendering is safe (no markup or script from answers)', async () => {
  const { context, page } = await open();
  await page.goto(`${base}/`);
  const result = await page.evaluate(async () => {
    const { render } = await import(document.getElementById('main').dataset.markdown);
    const evil = [
      '<img src=x onerror="window.pwned=1"> **bold** and `code` and *em*',
      '[bad](javascript:window.pwned=1) [ok](https://example.org/a) <script>window.pwned=1</script>',
      '- one', '- two', '',
      '```html', '<b onclick="window.pwned=1">x</b>', '```',
    ].join('\n');
    const host = document.createElement('div');
    host.append(render(evil, () => {}));
    document.body.append(host);
    return {
      tags: [...host.querySelectorAll('*')].map((e) => e.tagName.toLowerCase()).sort().join(','),
      hrefs: [...host.querySelectorAll('a')].map((a) => a.getAttribute('href')),
      text: host.textContent,
      pwned: window.pwned,
      attrs: [...host.querySelectorAll('*')].flatMap((e) => [...e.attributes].map((a) => a.name)).filter((n) => n.startsWith('on')),
    };
  });
  assert(result.pwned === undefined, 'no script ran');
  assert(!/\b(img|script|b)\b/.test(result.tags.replace(/\bbr\b/g, '')), `only safe tags: ${result.tags}`);
  assert(result.attrs.length === 0, `no event attributes: ${result.attrs}`);
  assert(result.hrefs.join() === 'https://example.org/a', `only http(s) links: ${result.hrefs}`);
  assert(result.text.includes('<img src=x') && result.text.includes('<b onclick'), 'markup shows as text');
  for (const t of ['strong', 'code', 'em', 'ul', 'li', 'pre', 'button']) assert(result.tags.split(',').includes(t), `renders ${t}: ${result.tags}`);
  await context.close();
});

test('a grounded answer shows its numbered sources, and they stay out of the API request', async () => {
  const { context, page } = await open();
  // The server's grounded stream (its shape is tested against the real
  // server in crates/orinari-server/tests/sources.rs); here the page's side.
  const sources = [
    { index: 1, source: 'handbook', document: 'guide/setup.md', title: 'Setup', url: null, snippet: 'Install the frobnicator.', score: 1 },
    { index: 2, source: 'wiki', document: 'https://docs.example/faq', title: 'FAQ', url: 'https://docs.example/faq', snippet: 'It hums.', score: 0.5 },
    { index: 3, source: 'wiki', document: 'x', title: 'Bad link', url: 'javascript:window.pwned=1', snippet: 'x', score: 0.1 },
  ];
  const chunk = (extra) => `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 0, model: 'orinari-small', system_fingerprint: 'fp', ...extra })}\n\n`;
  const bodies = [];
  await page.route('**/v1/chat/completions', (route) => {
    bodies.push(JSON.parse(route.request().postData()));
    route.fulfill({
      status: 200,
      headers: { 'content-type': 'text/event-stream' },
      body: chunk({ choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }], sources, retrieval: [] })
        + chunk({ choices: [{ index: 0, delta: { content: 'Run frob init [1]; it hums [2].' }, finish_reason: null }] })
        + chunk({ choices: [{ index: 0, delta: { annotations: [] }, finish_reason: null }] })
        + chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })
        + 'data: [DONE]\n\n',
    });
  });
  await page.goto(`${base}/`);
  await send(page, `${canary} How do I install it?`);
  await waitAnswered(page);
  const list = page.locator('#log > li.msg-assistant section.sources');
  assert(await list.count() === 1, 'a sources section under the answer');
  assert(await list.getAttribute('aria-labelledby') === 'sources-2', 'labelled by its heading');
  assert(await list.locator('li').count() === 3, 'three numbered sources');
  assert(await list.locator('li#src-2-2 a').getAttribute('href') === 'https://docs.example/faq', 'an http(s) link');
  assert(await list.locator('li#src-2-3 a').count() === 0, 'no javascript: link');
  assert(await page.evaluate(() => window.pwned) === undefined, 'nothing ran');
  await axe(page, 'grounded answer');
  // A reload keeps the sources with the answer; the next request sends
  // only roles and contents.
  await page.reload();
  assert(await page.locator('#log > li.msg-assistant section.sources li').count() === 3, 'kept across a reload');
  await send(page, `${canary} And then?`);
  await waitAnswered(page);
  const sent = bodies.at(-1).messages;
  assert(sent.length === 3 && sent.every((m) => Object.keys(m).join() === 'role,content'), `only role and content: ${JSON.stringify(sent)}`);
  await context.close();
});

test('without JavaScript the form answers with a page, turn after turn', async () => {
  const { context, page } = await open({ javaScriptEnabled: false });
  await page.goto(`${base}/`);
  await page.fill('#message', `${canary} What is the capital of France?`);
  await submitForm(page, '#send');
  assert(await q(page).messages().count() === 2, 'first turn: two messages');
  const first = await page.locator('#log > li.msg-user .body').first().textContent();
  assert(first.includes('capital of France'), 'the question is shown');
  await shoot(page, 'desktop-nojs');
  await page.setViewportSize(PHONE);
  await shoot(page, 'phone-nojs');
  await page.setViewportSize(DESKTOP);
  await page.fill('#message', `${canary} And of Italy?`);
  await submitForm(page, '#send');
  assert(await q(page).messages().count() === 4, 'second turn: the conversation round-trips in the form');
  const before = await page.locator('#log > li.msg-user').last().textContent();
  await submitForm(page, '#regenerate');
  assert(await q(page).messages().count() === 4, 'regenerate replaces the last answer');
  assert(await page.locator('#log > li.msg-user').last().textContent() === before, 'regenerate keeps the question');
  await submitForm(page, '#clear');
  assert(await q(page).messages().count() === 0, 'clear starts over');
  await context.close();
});

test('with keys required: the API key field (JS and no-JS), kept in the tab only', async () => {
  const keyed = process.env.KEYED_BASE;
  const key = process.env.API_KEY;
  assert(keyed && key, 'run.sh starts a server that requires keys (KEYED_BASE, API_KEY)');
  // The 401s this test provokes on purpose are logged by the browser; they
  // are not problems of the page.
  const seen = problems.length;
  const expected = (p) => p.includes('status of 401');
  {
    const { context, page } = await open();
    await page.goto(`${keyed}/`);
    assert(await page.locator('#api_key').count() === 1, 'the page has an API key field');
    await axe(page, 'key field');
    // Without a key the page says what is missing and sends nothing.
    await page.fill('#message', `${canary} hello`);
    await page.click('#send');
    const error = await page.locator('#error').textContent();
    assert(/API key/.test(error), `asks for the key: ${error}`);
    // A wrong key: the server's 401 reason is shown, the draft is not lost.
    await page.fill('#api_key', 'ork_wrong');
    await page.dispatchEvent('#api_key', 'change');
    await page.fill('#message', `${canary} hello`);
    await page.click('#send');
    await page.waitForFunction(() => /not valid/.test(document.getElementById('error').textContent), null, { timeout: ANSWER_MS });
    const kept = `${await page.inputValue('#message')} ${await page.locator('#log > li.msg-user').last().textContent().catch(() => '')}`;
    assert(kept.includes('hello'), `the question is not lost (draft or conversation): ${kept}`);
    // The right key answers, and stays in this tab only (sessionStorage).
    await page.fill('#api_key', key);
    await page.dispatchEvent('#api_key', 'change');
    await page.evaluate(() => { document.getElementById('error').textContent = ''; });
    await send(page, `${canary} Say hello.`);
    await page.waitForSelector('#send:not([hidden])', { timeout: ANSWER_MS });
    const failure = await page.locator('#error').textContent();
    assert(failure === '', `answered with the key, not: ${failure}`);
    assert(await q(page).assistant().count() >= 1, 'answered with the key');
    const stored = await page.evaluate(() => ({ s: sessionStorage.getItem('orinari.key'), l: localStorage.length, c: document.cookie }));
    assert(stored.s === key && stored.l === 0 && stored.c === '', `key only in sessionStorage: ${JSON.stringify(stored)}`);
    await page.reload();
    assert(await page.inputValue('#api_key') === key, 'a reload in the same tab keeps the key');
    await context.close();
  }
  {
    const { context, page } = await open({ javaScriptEnabled: false });
    await page.goto(`${keyed}/`);
    await page.fill('#message', `${canary} What is two plus two?`);
    await page.fill('#api_key', 'ork_wrong');
    await submitForm(page, '#send');
    assert(/not valid/.test(await page.locator('#error').textContent()), 'no-JS: a wrong key is explained on the page');
    assert((await page.inputValue('#message')).includes('two plus two'), 'no-JS: the draft is kept');
    await page.fill('#api_key', key);
    await submitForm(page, '#send');
    assert(await q(page).messages().count() === 2, 'no-JS: answered with the key');
    assert(await page.inputValue('#api_key') === key, 'no-JS: the page carries the key to the next post');
    await context.close();
  }
  const mine = problems.splice(seen);
  problems.push(...mine.filter((p) => !expected(p)));
});

test('accessibility: axe-core finds 0 violations (light, dark, phone, with a conversation)', async () => {
  for (const [label, options] of [
    ['light desktop', { colorScheme: 'light' }],
    ['dark desktop', { colorScheme: 'dark' }],
    ['light phone', { colorScheme: 'light', viewport: PHONE, isMobile: true, hasTouch: true }],
    ['dark phone', { colorScheme: 'dark', viewport: PHONE, isMobile: true, hasTouch: true }],
  ]) {
    // axe is injected as a script, which the page's CSP rightly refuses.
    const context = await browser.newContext({ viewport: DESKTOP, ...options, bypassCSP: true, reducedMotion: 'reduce' });
    const page = await context.newPage();
    await page.goto(`${base}/`);
    await page.waitForLoadState('networkidle');
    await axe(page, `${label}, empty`);
    if (label.startsWith('dark')) {
      await page.evaluate((c) => sessionStorage.setItem('orinari.chat', JSON.stringify([
        { role: 'user', content: `${c} Show me code` },
        { role: 'assistant', content: 'Here it is:\n\n```rust\nfn main() {}\n```\n\n- **one**\n- *two* [link](https://example.org)' },
      ])), canary);
      await page.reload();
      await page.waitForSelector('#log .codeblock');
      await axe(page, `${label}, conversation`);
      await shoot(page, label.replace(' ', '-') + '-conversation');
    } else {
      await shoot(page, label.replace(' ', '-') + '-empty');
    }
    await context.close();
  }
});

test('Lighthouse: performance and accessibility ≥ 95 (mobile and desktop)', async () => {
  const bin = path.join(here, 'node_modules/.bin/lighthouse');
  const scores = {};
  for (const preset of ['mobile', 'desktop']) {
    const out = path.join(artifacts, `lighthouse-${preset}.json`);
    const args = [`${base}/`, '--quiet', '--only-categories=performance,accessibility', '--output=json', `--output-path=${out}`,
      `--chrome-flags=${[...FLAGS, '--headless'].join(' ')}`];
    if (preset === 'desktop') args.push('--preset=desktop');
    const run = () => new Promise((resolve) => {
      const p = spawn(bin, args, { env: { ...process.env, CHROME_PATH: CHROMIUM }, stdio: ['ignore', 'ignore', 'inherit'] });
      p.on('exit', (code) => resolve(code));
    });
    // Lighthouse itself sometimes fails to record Chromium's trace on a
    // loaded machine ("Runtime error … NO_NAVSTART … Please run Lighthouse
    // again", exit 1; seen once in a CI-like run at load 4). That is the
    // tool failing, not the page: it gets one second run. Scores are never
    // retried.
    let code = await run();
    if (code !== 0) {
      console.log(`# lighthouse ${preset}: exited ${code}; running it once more`);
      code = await run();
    }
    assert(code === 0, `lighthouse ${preset} exited ${code}`);
    const report = JSON.parse(await readFile(out, 'utf8'));
    scores[preset] = {
      performance: Math.round(report.categories.performance.score * 100),
      accessibility: Math.round(report.categories.accessibility.score * 100),
      fcpMs: Math.round(report.audits['first-contentful-paint'].numericValue),
      lcpMs: Math.round(report.audits['largest-contentful-paint'].numericValue),
      tbtMs: Math.round(report.audits['total-blocking-time'].numericValue),
      cls: report.audits['cumulative-layout-shift'].numericValue,
      bytes: report.audits['total-byte-weight'].numericValue,
    };
    console.log(`# lighthouse ${preset}: ${JSON.stringify(scores[preset])}`);
  }
  measured.lighthouse = scores;
  for (const [preset, s] of Object.entries(scores)) {
    assert(s.performance >= 95 && s.accessibility >= 95, `${preset}: performance ${s.performance}, accessibility ${s.accessibility}`);
  }
});

statusTests({ test, open, axe, raw, assert, shoot, browser, base, measured, DESKTOP, PHONE });

test('no CSP violations or script errors on any page', async () => {
  assert(problems.length === 0, problems.join('\n'));
});

let passed = 0;
let failed = 0;
// ONLY=<text> runs the tests whose name contains it (e.g. ONLY=status).
const only = process.env.ONLY || '';
for (const t of tests) {
  if (only && !t.name.includes(only)) continue;
  const t0 = Date.now();
  try {
    await Promise.race([
      t.fn(),
      new Promise((_, reject) => setTimeout(() => reject(new Error('timed out after 240 s')), 240_000).unref()),
    ]);
    passed++;
    console.log(`ok - ${t.name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL - ${t.name} (${Date.now() - t0} ms)\n  ${String(e.stack || e).split('\n').slice(0, 6).join('\n  ')}`);
  }
}
await browser.close();
await writeFile(path.join(artifacts, 'measured.json'), JSON.stringify(measured, null, 2));
console.log(`node: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
