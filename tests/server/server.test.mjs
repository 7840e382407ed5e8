// gloas-server against the official OpenAI Node.js client.
//
//   node server.test.mjs SERVER_BINARY SOURCE_DIR
//
// Starts the server on 127.0.0.1 (a free port it picks) with stories260K
// and a fresh K/V folder, runs every check, and exits 0 when all pass, 1
// when one fails, 77 (ctest's skip) when node or the openai package is
// missing (`npm ci` in tests/server installs it).
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

let OpenAI;
if (typeof fetch !== 'function') {
  console.log(`SKIPPED: node or the openai package is missing (node ${process.version} has no fetch; the openai package needs 20 or later)`);
  process.exit(77);
}
try {
  ({ default: OpenAI } = await import('openai'));
} catch {
  console.log('SKIPPED: node or the openai package is missing (run `npm ci` in tests/server)');
  process.exit(77);
}

const [serverBin, sourceDir] = process.argv.slice(2);
if (!serverBin || !sourceDir) {
  console.error('usage: node server.test.mjs SERVER_BINARY SOURCE_DIR');
  process.exit(2);
}

// The model, where the C++ tests look: <src>/models, $GLOAS_MODELS, <src>/../shared/models.
function findModel(name) {
  const dirs = [path.join(sourceDir, 'models')];
  if (process.env.GLOAS_MODELS) dirs.push(process.env.GLOAS_MODELS);
  dirs.push(path.join(sourceDir, '..', 'shared', 'models'));
  for (const d of dirs) if (fs.existsSync(path.join(d, name))) return path.join(d, name);
  // A missing file is a skip, as for the C++ tests (tests/test-util.h).
  console.log(`SKIPPED: needs models/${name} (models/fetch.sh ${name}, or GLOAS_MODELS)`);
  process.exit(77);
}
const MODEL = findModel('stories260K.bin');
const KEY = 'test-key';
const kvDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gloas-server-test-'));
const CTX = 2048;

// A running server: its process, base URL and stderr (the access log).
async function startServer(extra = []) {
  const args = ['-m', MODEL, '--host', '127.0.0.1', '--port', '0', '--kv-dir', kvDir, '--api-key', KEY,
                '--parallel', '4', '-c', String(CTX), '--max-body', '64k', '-t', '1', ...extra];
  const proc = spawn(serverBin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the server did not start in 20 s:\n' + err)), 20000);
    proc.stderr.on('data', (d) => {
      err += d;
      const m = err.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`the server exited (${code}):\n${err}`)); });
  });
  proc.removeAllListeners('exit');
  const exited = new Promise((resolve) => proc.on('exit', (code, sig) => resolve({ code, sig })));
  return { proc, url, exited, log: () => err };
}

async function stopServer(s) {
  s.proc.kill('SIGTERM');
  const r = await s.exited;
  assert.equal(r.code, 0, `the server exits 0 on SIGTERM (got ${r.code}, ${r.sig})`);
}

let server = await startServer();
let client = new OpenAI({ baseURL: server.url + '/v1', apiKey: KEY, maxRetries: 0, timeout: 30000 });

let failed = 0;
async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok    ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL  ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

async function raw(pathname, body, { key = KEY, method = 'POST', contentType = 'application/json' } = {}) {
  const headers = { 'Content-Type': contentType };
  if (key) headers.Authorization = `Bearer ${key}`;
  const r = await fetch(server.url + pathname, { method, headers, body });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}

// An OpenAI-style error object naming `param`.
function assertError(r, status, param) {
  assert.equal(r.status, status, `status of ${r.text}`);
  assert.ok(r.json && r.json.error && typeof r.json.error.message === 'string' && r.json.error.message.length > 0,
            `an error object: ${r.text}`);
  if (param !== undefined) assert.equal(r.json.error.param, param, `param of ${r.text}`);
}

async function streamText(params, opts = {}) {
  const stream = await client.chat.completions.create({ ...params, stream: true }, opts);
  let text = '', finish = null, usage = null, first = null;
  for await (const c of stream) {
    if (c.usage) usage = c.usage;
    if (!c.choices.length) continue;
    if (first === null) first = c.choices[0].delta;
    text += c.choices[0].delta.content ?? '';
    if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
  }
  return { text, finish, usage, first };
}

async function streamCompletion(params) {
  const stream = await client.completions.create({ ...params, stream: true });
  let text = '', finish = null;
  for await (const c of stream) {
    text += c.choices[0]?.text ?? '';
    if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
  }
  return { text, finish };
}

async function metric(name) {
  const t = (await raw('/metrics', undefined, { method: 'GET' })).text;
  const m = t.match(new RegExp('^' + name.replace(/[{}"=]/g, (c) => '\\' + c) + ' (\\S+)$', 'm'));
  return m ? Number(m[1]) : 0;
}

const story = 'Once upon a time, there was a little girl named Lily.';
const greedy = { model: 'stories260K', temperature: 0 };

await check('/v1/models lists the model', async () => {
  const list = await client.models.list();
  const ids = [];
  for await (const m of list) ids.push(m.id);
  assert.deepEqual(ids, ['stories260K']);
});

await check('401 without the key or with a wrong one; /health needs none', async () => {
  assertError(await raw('/v1/models', undefined, { key: null, method: 'GET' }), 401);
  const bad = new OpenAI({ baseURL: server.url + '/v1', apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(bad.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: 'Hi' }] }),
                       (e) => e.status === 401);
  const h = await raw('/health', undefined, { key: null, method: 'GET' });
  assert.equal(h.status, 200);
  assert.equal(h.json.status, 'ok');
});

await check('completions: streamed text equals the whole response; usage counts', async () => {
  const r = await client.completions.create({ ...greedy, prompt: story, max_tokens: 40 });
  const c = r.choices[0];
  assert.equal(r.object, 'text_completion');
  assert.ok(c.text.length > 0);
  assert.equal(c.finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 40);
  assert.ok(r.usage.prompt_tokens > 5);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 40);
  assert.equal(typeof r.usage.prompt_tokens_details.cached_tokens, 'number');
  const s = await streamCompletion({ ...greedy, prompt: story, max_tokens: 40 });
  assert.equal(s.text, c.text);
  assert.equal(s.finish, 'length');
});

await check('chat: streamed text equals the whole response; role first, usage last', async () => {
  const messages = [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content: 'Tell me about a cat.' }];
  const r = await client.chat.completions.create({ ...greedy, messages, max_tokens: 30 });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.ok(r.choices[0].message.content.length > 0);
  const s = await streamText({ ...greedy, messages, max_tokens: 30, stream_options: { include_usage: true } });
  assert.equal(s.text, r.choices[0].message.content);
  assert.equal(s.first.role, 'assistant');
  assert.equal(s.finish, r.choices[0].finish_reason);
  assert.equal(s.usage.completion_tokens, r.usage.completion_tokens);
  assert.equal(s.usage.prompt_tokens, r.usage.prompt_tokens);
});

await check('stop strings end the text before them, streamed or not', async () => {
  const full = (await client.completions.create({ ...greedy, prompt: story, max_tokens: 60 })).choices[0].text;
  const words = full.split(' ').filter((w) => w.length >= 3);
  assert.ok(words.length >= 4, full);
  const stop = words[3];
  const expect = full.slice(0, full.indexOf(stop));
  const r = await client.completions.create({ ...greedy, prompt: story, max_tokens: 60, stop: ['zzzz', stop] });
  assert.equal(r.choices[0].text, expect);
  assert.equal(r.choices[0].finish_reason, 'stop');
  const s = await streamCompletion({ ...greedy, prompt: story, max_tokens: 60, stop });
  assert.equal(s.text, expect);
  assert.equal(s.finish, 'stop');
});

await check('equal seeds give equal outputs at temperature 1', async () => {
  const p = { model: 'stories260K', prompt: story, max_tokens: 40, temperature: 1, top_p: 1 };
  const a = (await client.completions.create({ ...p, seed: 42 })).choices[0].text;
  const b = (await client.completions.create({ ...p, seed: 42 })).choices[0].text;
  assert.equal(a, b);
  const others = [];
  for (const seed of [1, 2, 3]) others.push((await client.completions.create({ ...p, seed })).choices[0].text);
  assert.ok(others.some((t) => t !== a), 'other seeds give another text');
});

await check('bad requests get 4xx with an error object naming the field', async () => {
  assertError(await raw('/v1/chat/completions', '{"messages": [', {}), 400);
  // a number past a double's range is a bad body too, not a server error
  assertError(await raw('/v1/completions', '{"prompt": "x", "max_tokens": 1e999}', {}), 400);
  assertError(await raw('/v1/chat/completions', JSON.stringify({ messages: 'hello' })), 400, 'messages');
  assertError(await raw('/v1/chat/completions', JSON.stringify({ messages: [{ role: 'user', content: 3 }] })), 400,
              'messages[0].content');
  assertError(await raw('/v1/completions', JSON.stringify({ prompt: 'x', temperature: 'hot' })), 400, 'temperature');
  assertError(await raw('/v1/completions', JSON.stringify({ prompt: 'x', max_tokens: 1.5 })), 400, 'max_tokens');
  assertError(await raw('/v1/completions', JSON.stringify({ prompt: 'x', stop: [1] })), 400, 'stop');
  assertError(await raw('/v1/completions', JSON.stringify({ prompt: 'x', model: 'gpt-4o' })), 404, 'model');
  const long = 'Once upon a time there was a dog. '.repeat(300);
  assertError(await raw('/v1/completions', JSON.stringify({ prompt: long })), 400, 'prompt');
  assertError(await raw('/v1/completions', JSON.stringify({ prompt: 'x', max_tokens: CTX })), 400, 'max_tokens');
  assertError(await raw('/v1/completions', JSON.stringify({ prompt: 'x'.repeat(100 * 1024) })), 413, 'body');
  // Through the client too: its error carries the status and the field.
  await assert.rejects(client.completions.create({ model: 'stories260K', prompt: 'x', top_p: 7 }),
                       (e) => e.status === 400 && e.param === 'top_p');
  // The server still answers.
  const r = await client.completions.create({ ...greedy, prompt: story, max_tokens: 5 });
  assert.equal(r.usage.completion_tokens, 5);
});

await check('tokenize and detokenize round-trip', async () => {
  const t = await raw('/tokenize', JSON.stringify({ content: story }));
  assert.equal(t.status, 200);
  assert.ok(t.json.tokens.length > 5);
  const d = await raw('/detokenize', JSON.stringify({ tokens: t.json.tokens }));
  assert.equal(d.json.content.trim(), story);
  assertError(await raw('/detokenize', JSON.stringify({ tokens: [1e9] })), 400, 'tokens');
});

await check('four concurrent streams equal four sequential runs at temperature 0', async () => {
  const prompts = ['Tom had a red ball.', 'The sun was hot.', 'Lily saw a big dog.', 'Once upon a time, a bird'];
  const params = (p) => ({ ...greedy, messages: [{ role: 'user', content: p }], max_tokens: 64, ignore_eos: true });
  const sequential = [];
  for (const p of prompts) sequential.push((await streamText(params(p))).text);
  const steps0 = await metric('gloas_steps_total'), tokens0 = await metric('gloas_generated_tokens_total');
  const concurrent = await Promise.all(prompts.map((p) => streamText(params(p))));
  assert.deepEqual(concurrent.map((s) => s.text), sequential);
  assert.ok(new Set(sequential).size > 1, 'the prompts give different texts');
  // Batched: the forward passes were fewer than the tokens generated.
  const steps = (await metric('gloas_steps_total')) - steps0, tokens = (await metric('gloas_generated_tokens_total')) - tokens0;
  assert.ok(steps < tokens, `${steps} steps for ${tokens} tokens`);
});

await check('logprobs: chat top_logprobs and completions logprobs', async () => {
  const r = await client.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 6,
                                                   logprobs: true, top_logprobs: 3 });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, r.usage.completion_tokens);
  for (const t of content) {
    assert.equal(t.top_logprobs.length, 3);
    assert.ok(t.logprob <= 0 && Math.abs(t.logprob - t.top_logprobs[0].logprob) < 1e-6, 'greedy picks the most likely');
  }
  const stream = await client.chat.completions.create({ ...greedy, messages: [{ role: 'user', content: 'Hi' }],
                                                        max_tokens: 6, logprobs: true, top_logprobs: 3, stream: true });
  let streamed = [];
  for await (const ch of stream) streamed = streamed.concat(ch.choices[0]?.logprobs?.content ?? []);
  assert.deepEqual(streamed.map((t) => t.token), content.map((t) => t.token));
  const c = await client.completions.create({ ...greedy, prompt: story, max_tokens: 4, logprobs: 2 });
  assert.equal(c.choices[0].logprobs.tokens.length, 4);
  assert.equal(c.choices[0].logprobs.tokens.join(''), c.choices[0].text);
  assert.equal(Object.keys(c.choices[0].logprobs.top_logprobs[0]).length, 2);
});


await check('abort mid-stream: the generation stops and its sequence is free', async () => {
  const cancelled0 = await metric('gloas_generations_total{reason="cancelled"}');
  const generated0 = await metric('gloas_generated_tokens_total');
  const controller = new AbortController();
  const stream = await client.completions.create(
    { ...greedy, prompt: story, max_tokens: CTX - 100, ignore_eos: true, stream: true }, { signal: controller.signal });
  // The client ends the iteration quietly when aborted (or throws, by version).
  let chunks = 0;
  try {
    for await (const _ of stream) {
      if (++chunks < 3) continue;
      controller.abort();
      break;
    }
  } catch (e) {
    if (e.name !== 'AbortError' && !(e instanceof OpenAI.APIUserAbortError)) throw e;
  }
  assert.equal(chunks, 3, 'the stream ends at the abort');
  let health;
  const t0 = Date.now();
  do {
    health = (await raw('/health', undefined, { method: 'GET' })).json;
  } while (health.slots_processing !== 0 && Date.now() - t0 < 3000);
  assert.equal(health.slots_processing, 0, 'no sequence in use after the abort');
  assert.equal(await metric('gloas_generations_total{reason="cancelled"}'), cancelled0 + 1);
  const generated = (await metric('gloas_generated_tokens_total')) - generated0;
  assert.ok(generated < CTX - 100, `the generation stopped early (${generated} tokens)`);
  // Every sequence serves again.
  const again = await Promise.all([0, 1, 2, 3].map(() => client.completions.create({ ...greedy, prompt: story, max_tokens: 8 })));
  for (const r of again) assert.equal(r.usage.completion_tokens, 8);
});

// A prompt of several K/V pages (32 tokens each by default).
const shared = 'Once upon a time, in a small town, there lived a kind old man named Sam. ' +
  'Every day he walked to the park with his little dog Max, and they played with a red ball under the big tree. ';
const cachedPrompt = shared + 'One day, Max found a shiny key in the grass.';

let cachedCount = 0;
await check('a repeated prompt and a shared prefix reuse stored pages (cached_tokens)', async () => {
  const first = await client.completions.create({ ...greedy, prompt: cachedPrompt, max_tokens: 4 });
  // No page of this prompt is stored yet; the stored tails of earlier
  // requests may share its first few tokens ("Once upon a time").
  assert.ok(first.usage.prompt_tokens_details.cached_tokens < 32,
            `nothing of this prompt past its first words is cached (${first.usage.prompt_tokens_details.cached_tokens})`);
  const again = await client.completions.create({ ...greedy, prompt: cachedPrompt, max_tokens: 4 });
  cachedCount = again.usage.prompt_tokens_details.cached_tokens;
  assert.ok(cachedCount >= 64, `cached_tokens ${cachedCount}`);
  assert.ok(cachedCount < again.usage.prompt_tokens);
  assert.equal(again.choices[0].text, first.choices[0].text);
  const other = await client.completions.create({ ...greedy, prompt: shared + 'The sky was blue.', max_tokens: 4 });
  assert.ok(other.usage.prompt_tokens_details.cached_tokens >= 64, 'a different prompt with the same prefix');
});

await check('concurrent prompts with a new shared prefix compute it once', async () => {
  const prefix = 'A little girl named Mia had a garden behind her house, full of yellow flowers and tall green beans. ' +
    'Each morning she gave water to the plants and sang a happy song to the bees that came to visit. ';
  const endings = ['She saw a frog.', 'It began to rain.', 'Her cat ran by.', 'A bird sang too.'];
  const req = (e) => client.completions.create({ ...greedy, prompt: prefix + e, max_tokens: 8, ignore_eos: true });
  const concurrent = await Promise.all(endings.map(req));
  // One request computes the shared pages; the others wait for them and take
  // them from the store.
  const cached = concurrent.map((r) => r.usage.prompt_tokens_details.cached_tokens).sort((a, b) => a - b);
  assert.ok(cached[0] < 64, `the first computes the prefix (${cached})`);
  for (const c of cached.slice(1)) assert.ok(c >= 64, `the others reuse it (${cached})`);
  // Waiting changes no result: each text equals a later run of the same request.
  for (let k = 0; k < endings.length; ++k) assert.equal((await req(endings[k])).choices[0].text, concurrent[k].choices[0].text);
});

await check('metrics: Prometheus text with requests, tokens, latency histograms and K/V pages', async () => {
  const t = (await raw('/metrics', undefined, { method: 'GET' })).text;
  for (const name of ['gloas_requests_total{path="/v1/completions",status="200"}', 'gloas_generated_tokens_total',
                      'gloas_time_to_first_token_seconds_count', 'gloas_inter_token_seconds_bucket{le="+Inf"}',
                      'gloas_kv_pages{state="stored"}', 'gloas_kv_hit_rate', 'gloas_prompt_cached_tokens_total',
                      'gloas_kv_held_bytes{pages="shared"}', 'gloas_kv_held_bytes{pages="unshared"}',
                      'gloas_kv_sequence_bytes'])
    assert.ok(t.includes(name + ' ') || t.includes(name), `${name} in /metrics`);
  assert.ok((await metric('gloas_kv_pages{state="stored"}')) > 0);
  assert.ok((await metric('gloas_prompt_cached_tokens_total')) >= cachedCount);
});

await check('the access log has one line per request with its tokens and times', async () => {
  const lines = server.log().split('\n').filter((l) => l.includes(' POST /v1/completions 200 '));
  assert.ok(lines.length > 5);
  assert.match(lines[lines.length - 1], /prompt=\d+ cached=\d+ completion=\d+ ttft_ms=[\d.]+ total_ms=[\d.]+/);
});

await check('after a restart a repeated prompt keeps its cached-token count', async () => {
  await stopServer(server);
  server = await startServer(['--log-format', 'json']);
  client = new OpenAI({ baseURL: server.url + '/v1', apiKey: KEY, maxRetries: 0, timeout: 30000 });
  // At least what the running server reused: by now the prompt's partial
  // last page (its tail) is stored too, so it may reuse all but one token.
  const r = await client.completions.create({ ...greedy, prompt: cachedPrompt, max_tokens: 4 });
  const cachedAfter = r.usage.prompt_tokens_details.cached_tokens;
  assert.ok(cachedAfter >= cachedCount && cachedAfter < r.usage.prompt_tokens,
            `cached ${cachedAfter} after the restart, ${cachedCount} before, of ${r.usage.prompt_tokens}`);
  // The access-log line is written once the response is sent: it may reach
  // stderr a moment after the client has the response.
  const findLine = () => server.log().split('\n').find((l) => l.startsWith('{') && l.includes('/v1/completions'));
  for (const t0 = Date.now(); !findLine() && Date.now() - t0 < 5000;) await new Promise((res) => setTimeout(res, 20));
  const line = findLine();
  assert.ok(line, 'a JSON access-log line for the request');
  const j = JSON.parse(line);
  assert.equal(j.status, 200);
  assert.equal(j.cached_tokens, cachedAfter);
});

await check('a full queue answers 503 with Retry-After', async () => {
  await stopServer(server);
  server = await startServer(['--parallel', '1', '--queue', '0']);
  client = new OpenAI({ baseURL: server.url + '/v1', apiKey: KEY, maxRetries: 0, timeout: 30000 });
  const controller = new AbortController();
  const stream = await client.completions.create(
    { ...greedy, prompt: story, max_tokens: CTX - 100, ignore_eos: true, stream: true }, { signal: controller.signal });
  const it = stream[Symbol.asyncIterator]();
  await it.next();  // generating: the one sequence is taken
  const r = await raw('/v1/completions', JSON.stringify({ prompt: story, max_tokens: 4 }));
  assertError(r, 503);
  assert.equal(r.headers.get('retry-after'), '1');
  controller.abort();
  await it.return?.();
  const t0 = Date.now();
  let ok = null;
  while (!ok && Date.now() - t0 < 3000) {
    const a = await raw('/v1/completions', JSON.stringify({ prompt: story, max_tokens: 4 }));
    if (a.status === 200) ok = a;
  }
  assert.ok(ok, 'served again once the stream is aborted');
});

await stopServer(server).catch((e) => { failed++; console.log(`FAIL  stop: ${e}`); });
fs.rmSync(kvDir, { recursive: true, force: true });
console.log(failed ? `${failed} check(s) failed` : 'all checks passed');
process.exit(failed ? 1 : 0);
