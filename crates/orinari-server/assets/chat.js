// The chat page, enhanced: answers stream token by token from
// /v1/chat/completions (fetch + SSE). Without this script the same form posts
// to the server and gets the whole answer as a page.
// The conversation lives only in this tab: memory plus sessionStorage (gone
// when the tab closes); never localStorage, cookies or the server.

const $ = (id) => document.getElementById(id);
const main = $('main');
const form = $('chat');
const log = $('log');
const box = $('message');
const modelSelect = $('model');
const hidden = form.elements.namedItem('conversation');
const buttons = { send: $('send'), stop: $('stop'), regenerate: $('regenerate'), clear: $('clear') };
const status = $('status');
const errorBox = $('error');
const empty = $('empty');
const KEY = 'orinari.chat';
// When the server asks for an API key, the page has a field for it; the key
// is kept in this tab's sessionStorage only and sent as a bearer token.
const apiKey = $('api_key');
const API_KEY = 'orinari.key';
const MAX_TOKENS = Number(main.dataset.maxTokens) || 512;
const TEMPERATURE = Number(main.dataset.temperature) || 0.7;

let messages = restore();
let controller = null;
let markdown = null;

function restore() {
  try {
    const fromPage = JSON.parse(hidden.value || '[]');
    if (fromPage.length) return fromPage;
    return JSON.parse(sessionStorage.getItem(KEY) || '[]');
  } catch {
    return [];
  }
}

function auth() {
  const key = apiKey?.value.trim();
  return key ? { authorization: `Bearer ${key}` } : {};
}

if (apiKey) {
  // The script checks the field itself and says so in the page's error line.
  apiKey.required = false;
  try { apiKey.value ||= sessionStorage.getItem(API_KEY) || ''; } catch { /* storage off */ }
  apiKey.addEventListener('change', () => {
    try {
      if (apiKey.value.trim()) sessionStorage.setItem(API_KEY, apiKey.value.trim());
      else sessionStorage.removeItem(API_KEY);
    } catch { /* storage off: this page only */ }
  });
}

function save() {
  const json = JSON.stringify(messages);
  hidden.value = json;
  try {
    if (messages.length) sessionStorage.setItem(KEY, json);
    else sessionStorage.removeItem(KEY);
  } catch { /* storage off: memory only */ }
}

// Markdown is a separate module, loaded on first need.
function loadMarkdown() {
  markdown ??= import(main.dataset.markdown);
  return markdown;
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    announce('Copied.');
    const label = button.textContent;
    button.textContent = 'Copied';
    setTimeout(() => { button.textContent = label; }, 1500);
  } catch {
    announce('Copying is not allowed here.');
  }
}

function announce(text) {
  status.textContent = '';
  // A fresh node so screen readers announce repeated messages too.
  requestAnimationFrame(() => { status.textContent = text; });
}

function showError(text) {
  errorBox.textContent = text;
  errorBox.hidden = !text;
}

async function fill(body, text, role) {
  if (role !== 'assistant') {
    body.textContent = text;
    return;
  }
  const { render } = await loadMarkdown();
  body.replaceChildren(render(text, copy));
  body.classList.add('md');
}

function bubble(role, text) {
  const li = document.createElement('li');
  li.className = `msg msg-${role}`;
  const who = document.createElement('h3');
  who.className = 'who';
  who.textContent = role === 'user' ? 'You' : 'Assistant';
  const body = document.createElement('div');
  body.className = 'body';
  body.textContent = text;
  li.append(who, body);
  if (role === 'assistant') {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = 'Copy';
    b.setAttribute('aria-label', 'Copy answer');
    b.addEventListener('click', () => copy(li.dataset.text ?? body.textContent, b));
    who.append(b);
  }
  log.append(li);
  empty.hidden = true;
  return { li, body };
}

// A grounded answer's numbered sources, under it: title (a link only for
// an http(s) address), document and snippet, built with DOM calls only.
function sourcesList(sources, n) {
  const section = document.createElement('section');
  section.className = 'sources';
  const heading = document.createElement('h4');
  heading.id = `sources-${n}`;
  heading.textContent = 'Sources';
  section.setAttribute('aria-labelledby', heading.id);
  const list = document.createElement('ol');
  for (const s of sources) {
    const item = document.createElement('li');
    item.id = `src-${n}-${s.index}`;
    item.value = s.index;
    const url = typeof s.url === 'string' && /^https?:\/\//.test(s.url) ? s.url : null;
    const title = document.createElement(url ? 'a' : 'span');
    title.textContent = s.title || s.document;
    if (url) {
      title.href = url;
      title.rel = 'noopener noreferrer';
    } else {
      title.className = 'title';
    }
    const doc = document.createElement('span');
    doc.className = 'document';
    doc.textContent = s.document;
    const snippet = document.createElement('p');
    snippet.className = 'snippet';
    snippet.textContent = s.snippet;
    item.append(title, ' ', doc, snippet);
    list.append(item);
  }
  section.append(heading, list);
  return section;
}

// What the page keeps of a source (the same fields the no-JS form keeps).
function keep(s) {
  return { index: s.index, title: s.title, document: s.document, url: s.url ?? null, snippet: s.snippet };
}

function draw() {
  log.replaceChildren();
  messages.forEach((m, i) => {
    const { li, body } = bubble(m.role, m.content);
    li.dataset.text = m.content;
    fill(body, m.content, m.role);
    if (m.sources?.length) li.append(sourcesList(m.sources, i + 1));
  });
  empty.hidden = messages.length > 0;
  update();
}

function update() {
  const busy = controller !== null;
  buttons.send.hidden = busy;
  buttons.stop.hidden = !busy;
  buttons.regenerate.disabled = busy || messages.at(-1)?.role !== 'assistant';
  buttons.clear.disabled = busy;
}

// Parse SSE frames from the response body; call onData for each payload.
async function readEvents(res, onData) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const frame = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = frame.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      if (data === '[DONE]') return;
      if (data) onData(JSON.parse(data));
    }
  }
}

async function ask() {
  showError('');
  controller = new AbortController();
  const fromSend = document.activeElement === buttons.send;
  update();
  if (fromSend) buttons.stop.focus();
  const { li, body } = bubble('assistant', '');
  li.setAttribute('aria-busy', 'true');
  announce('The assistant is answering.');
  loadMarkdown();
  let text = '';
  let sources = [];
  let pending = false;
  const paint = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; body.textContent = text; });
  };
  let failure = null;
  let stopped = false;
  try {
    const res = await fetch('/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth() },
      body: JSON.stringify({
        model: modelSelect.value,
        stream: true,
        // Only what the API takes: a grounded answer's sources stay here.
        messages: messages.map(({ role, content }) => ({ role, content })),
        max_tokens: MAX_TOKENS,
        temperature: TEMPERATURE,
      }),
      signal: controller.signal,
    });
    if (!res.ok) {
      const j = await res.json().catch(() => null);
      throw new Error(j?.error?.message || `The server answered ${res.status}.`);
    }
    await readEvents(res, (ev) => {
      if (ev.error) throw new Error(ev.error.message);
      if (Array.isArray(ev.sources)) sources = ev.sources.map(keep);
      const delta = ev.choices?.[0]?.delta?.content;
      if (delta) { text += delta; paint(); }
    });
  } catch (e) {
    if (e.name === 'AbortError') stopped = true;
    else failure = e.message || 'The answer failed.';
  }
  controller = null;
  li.removeAttribute('aria-busy');
  li.dataset.text = text;
  if (text) {
    messages.push(sources.length ? { role: 'assistant', content: text, sources } : { role: 'assistant', content: text });
    save();
    await fill(body, text, 'assistant');
    if (sources.length) li.append(sourcesList(sources, messages.length));
  } else {
    li.remove();
  }
  if (stopped) {
    const note = document.createElement('p');
    note.className = 'stopped';
    note.textContent = 'Stopped.';
    if (text) li.append(note);
    announce('Stopped.');
  } else if (failure) {
    showError(failure);
  } else {
    announce(`The assistant answered: ${text}`);
  }
  const fromStop = document.activeElement === buttons.stop;
  update();
  if (fromStop) box.focus();
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  if (controller) return;
  const action = e.submitter?.value || 'send';
  if (action === 'clear') {
    messages = [];
    save();
    draw();
    showError('');
    announce('Conversation cleared.');
    box.focus();
    return;
  }
  if (action === 'regenerate') {
    if (messages.at(-1)?.role !== 'assistant') return;
    messages.pop();
    log.lastElementChild?.remove();
  } else {
    if (apiKey && !apiKey.value.trim()) {
      showError('Enter your API key first.');
      apiKey.focus();
      return;
    }
    const text = box.value.trim();
    if (!text) {
      showError('Type a message first.');
      box.focus();
      return;
    }
    messages.push({ role: 'user', content: text });
    bubble('user', text);
    box.value = '';
  }
  save();
  ask();
});

buttons.stop.addEventListener('click', () => {
  controller?.abort();
  box.focus();
});

box.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    form.requestSubmit(buttons.send);
  }
});

// The model list comes from the API, so the picker matches what it serves.
fetch('/v1/models', { headers: auth() }).then((r) => (r.ok ? r.json() : null)).then((list) => {
  const ids = list?.data?.map((m) => m.id) ?? [];
  if (!ids.length) return;
  const current = modelSelect.value;
  modelSelect.replaceChildren(...ids.map((id) => new Option(id, id, false, id === current)));
}).catch(() => {});

draw();
