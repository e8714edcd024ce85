// The official `openai` Node client, unmodified, against orinari.
//
// Usage: node node_client.mjs http://HOST:PORT/v1
// Exits 0 when every check passes; prints one line per check.

import OpenAI from 'openai';
import { VERSION } from 'openai/version';

const MODEL = 'orinari-small';
const PROMPT = [{ role: 'user', content: 'Write two sentences about the sea.' }];
const baseURL = process.argv[2] ?? 'http://127.0.0.1:8080/v1';
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 120_000 });

function expect(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

async function expectError(cls, fn) {
  try {
    await fn();
  } catch (e) {
    if (e instanceof cls) return e;
    throw new Error(`expected ${cls.name}, got ${e?.constructor?.name}: ${e?.message}`);
  }
  throw new Error(`expected ${cls.name}, got success`);
}

const checks = [
  ['models.list', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    expect(ids.includes(MODEL), `${MODEL} not in ${ids}`);
  }],
  ['models.retrieve', async () => {
    const m = await client.models.retrieve(MODEL);
    expect(m.id === MODEL && m.object === 'model', JSON.stringify(m));
  }],
  ['chat.completions.create', async () => {
    const r = await client.chat.completions.create({
      model: MODEL, messages: PROMPT, max_tokens: 24, temperature: 0,
    });
    expect(r.object === 'chat.completion', r.object);
    expect(r.model === MODEL, r.model);
    const c = r.choices[0];
    expect(c.message.role === 'assistant', c.message.role);
    expect(c.message.content, 'empty content');
    expect(['stop', 'length'].includes(c.finish_reason), c.finish_reason);
    const u = r.usage;
    expect(u.prompt_tokens > 0 && u.completion_tokens > 0 && u.completion_tokens <= 24, JSON.stringify(u));
    expect(u.total_tokens === u.prompt_tokens + u.completion_tokens, JSON.stringify(u));
  }],
  ['chat.completions.create stream + include_usage', async () => {
    const stream = await client.chat.completions.create({
      model: MODEL, messages: PROMPT, max_tokens: 24, temperature: 0,
      stream: true, stream_options: { include_usage: true },
    });
    let text = '', finish = null, usage = null, chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      expect(chunk.object === 'chat.completion.chunk', chunk.object);
      if (chunk.usage) {
        usage = chunk.usage;
        expect(chunk.choices.length === 0, 'usage chunk has choices');
        continue;
      }
      text += chunk.choices[0].delta.content ?? '';
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    expect(chunks > 2, `only ${chunks} chunks`);
    expect(text, 'empty stream');
    expect(['stop', 'length'].includes(finish), finish);
    expect(usage && usage.completion_tokens > 0 && usage.completion_tokens <= 24, JSON.stringify(usage));
    const whole = await client.chat.completions.create({
      model: MODEL, messages: PROMPT, max_tokens: 24, temperature: 0,
    });
    expect(whole.choices[0].message.content === text,
      `${JSON.stringify(whole.choices[0].message.content)} !== ${JSON.stringify(text)}`);
  }],
  ['seed determinism', async () => {
    const req = { model: MODEL, messages: PROMPT, max_tokens: 16, temperature: 1.0, seed: 1234 };
    const a = (await client.chat.completions.create(req)).choices[0].message.content;
    const b = (await client.chat.completions.create(req)).choices[0].message.content;
    expect(a === b, `same seed, different output: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
  }],
  ['stop sequence', async () => {
    const req = { model: MODEL, messages: PROMPT, max_tokens: 32, temperature: 0 };
    const full = (await client.chat.completions.create(req)).choices[0].message.content;
    const words = full.split(/\s+/).filter(Boolean);
    expect(words.length >= 4, `too short to pick a stop word: ${JSON.stringify(full)}`);
    const word = words[Math.floor(words.length / 2)];
    const r = await client.chat.completions.create({ ...req, stop: [word] });
    const got = r.choices[0].message.content;
    expect(!got.includes(word), `stop ${JSON.stringify(word)} in ${JSON.stringify(got)}`);
    expect(full.startsWith(got), `${JSON.stringify(got)} is not a prefix of ${JSON.stringify(full)}`);
    expect(r.choices[0].finish_reason === 'stop', r.choices[0].finish_reason);
  }],
  ['invalid request -> BadRequestError(param)', async () => {
    const e = await expectError(OpenAI.BadRequestError, () =>
      client.chat.completions.create({ model: MODEL, messages: PROMPT, temperature: 9 }));
    expect(e.status === 400, e.status);
    expect(e.param === 'temperature', `param ${e.param}`);
    expect(e.type === 'invalid_request_error', e.type);
  }],
  ['empty messages -> BadRequestError(param)', async () => {
    const e = await expectError(OpenAI.BadRequestError, () =>
      client.chat.completions.create({ model: MODEL, messages: [] }));
    expect(e.param === 'messages', `param ${e.param}`);
  }],
  ['unknown model -> NotFoundError', async () => {
    const e = await expectError(OpenAI.NotFoundError, () =>
      client.chat.completions.create({ model: 'no-such-model', messages: PROMPT }));
    expect(e.status === 404, e.status);
    expect(e.code === 'model_not_found', e.code);
    await expectError(OpenAI.NotFoundError, () => client.models.retrieve('no-such-model'));
  }],
];

let failed = 0;
for (const [name, fn] of checks) {
  try {
    await fn();
    console.log(`node: ok   ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`node: FAIL ${name}: ${e?.constructor?.name}: ${e?.message}`);
  }
}
console.log(`node: openai ${VERSION} on node ${process.version}: ${failed} failed`);
process.exit(failed ? 1 : 0);
