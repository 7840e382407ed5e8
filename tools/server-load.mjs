#!/usr/bin/env node
// Load for an OpenAI-compatible server (gloas-server, llama-server): many
// clients at once, streamed completions, and the figures users feel.
//
//   node tools/server-load.mjs --url http://127.0.0.1:8080 --clients 8 --requests 32
//   node tools/server-load.mjs --url URL --trace mooncake.jsonl --block-tokens 512 --time-scale 0.1
//
// Synthetic (the default): every request is a chat of one shared system
// prompt of --system-tokens tokens and a user message of --user-tokens
// tokens of its own, generating --max-tokens tokens (end of sequence
// ignored); --clients clients send --requests requests in all, each client
// one after the other.
// Trace: JSON lines {"timestamp" (ms), "input_length", "output_length",
// "hash_ids"} (the Mooncake FAST'25 format: one hash id per block of
// --block-tokens prompt tokens, equal ids meaning equal blocks). Each
// request's prompt is token ids made from its hash ids (so equal blocks are
// equal tokens), cut to input_length; it is sent at timestamp x --time-scale
// ms after the start and generates output_length tokens. Requests that do not
// fit the server's context are counted and skipped.
//
// Prints requests/s, generated tokens/s, time to first token and inter-token
// latency p50/p99 and the share of prompt tokens the server reported cached
// (usage.prompt_tokens_details.cached_tokens); --json prints one JSON object.
// Needs Node.js 18 or later (fetch); no packages.

const args = process.argv.slice(2);
const opt = { url: 'http://127.0.0.1:8080', clients: 4, requests: 16, 'system-tokens': 400, 'user-tokens': 50,
              'max-tokens': 64, 'api-key': '', model: '', trace: '', 'block-tokens': 512, 'time-scale': 1, json: false };
for (let i = 0; i < args.length; i++) {
  const k = args[i].replace(/^--/, '');
  if (k === 'help' || k === 'h') {
    console.log(process.argv[1].split('/').pop() + ' [--url URL] [--clients N] [--requests N] [--system-tokens N] ' +
                '[--user-tokens N] [--max-tokens N] [--api-key KEY] [--model ID] [--trace FILE --block-tokens N ' +
                '--time-scale X] [--json]');
    process.exit(0);
  }
  if (!(k in opt) || !args[i].startsWith('--')) { console.error(`server-load: unknown option '${args[i]}'`); process.exit(2); }
  if (typeof opt[k] === 'boolean') { opt[k] = true; continue; }
  if (i + 1 >= args.length) { console.error(`server-load: --${k} needs a value`); process.exit(2); }
  const v = args[++i];
  if (typeof opt[k] === 'number') {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0 || (k !== 'time-scale' && !Number.isInteger(n)))
      { console.error(`server-load: --${k}: '${v}' is not a non-negative ${k === 'time-scale' ? 'number' : 'integer'}`); process.exit(2); }
    opt[k] = n;
  } else opt[k] = v;
}
const base = opt.url.replace(/\/$/, '');
const headers = { 'Content-Type': 'application/json' };
if (opt['api-key']) headers.Authorization = `Bearer ${opt['api-key']}`;

async function getJson(path, body) {
  const r = await fetch(base + path, body === undefined ? { headers } : { method: 'POST', headers, body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}: ${await r.text()}`);
  return r.json();
}

const models = await getJson('/v1/models');
const model = opt.model || models.data[0].id;
const meta = models.data[0].meta || {};
const nVocab = meta.n_vocab || 32000;
const nCtx = meta.n_ctx || meta.n_ctx_train || Infinity;

// Text of exactly n tokens (by the server's tokenizer), from a seeded word list.
const WORDS = ('time day cat dog tree sun park ball girl boy house river bird red big small happy friend ' +
               'mother father garden flower rain snow book toy car boat star moon sea hill road door').split(' ');
function words(seed, n) {
  let x = seed >>> 0 || 1, out = [];
  for (let i = 0; i < n; i++) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; out.push(WORDS[x % WORDS.length]); }
  return out.join(' ');
}
async function textOfTokens(seed, n) {
  if (n <= 0) return '';
  let lo = 1, hi = 2 * n + 8, best = words(seed, 1);
  while (lo <= hi) {  // the most words whose text is at most n tokens
    const mid = (lo + hi) >> 1, t = words(seed, mid);
    const k = (await getJson('/tokenize', { content: t })).tokens.length;
    if (k <= n) { best = t; lo = mid + 1; } else hi = mid - 1;
  }
  return best;
}

// One streamed request; resolves to its timings and usage.
async function run(body) {
  const t0 = performance.now();
  const r = await fetch(base + (body.messages ? '/v1/chat/completions' : '/v1/completions'), {
    method: 'POST', headers, body: JSON.stringify({ ...body, model, stream: true, stream_options: { include_usage: true } }) });
  if (!r.ok) return { error: `HTTP ${r.status}: ${(await r.text()).slice(0, 200)}` };
  const times = [];
  let usage = null, buf = '';
  const dec = new TextDecoder();
  for await (const part of r.body) {
    buf += dec.decode(part, { stream: true });
    let at;
    while ((at = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, at);
      buf = buf.slice(at + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const c = JSON.parse(ev.slice(6));
      if (c.error) return { error: c.error.message };
      if (c.usage) usage = c.usage;
      const ch = c.choices && c.choices[0];
      if (ch && ((ch.delta && ch.delta.content) || ch.text)) times.push(performance.now());
    }
  }
  return { t0, t1: performance.now(), times, usage };
}

const results = [];
let skipped = 0;
if (!opt.trace) {
  const system = await textOfTokens(12345, opt['system-tokens']);
  const users = [];
  for (let i = 0; i < opt.requests; i++) users.push(await textOfTokens(1000 + i, opt['user-tokens']));
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: opt.clients }, async () => {
    while (next < opt.requests) {
      const i = next++;
      results.push(await run({ messages: [{ role: 'system', content: system }, { role: 'user', content: users[i] }],
                               max_tokens: opt['max-tokens'], temperature: 0, ignore_eos: true }));
    }
  }));
  results.wall = performance.now() - t0;
} else {
  const fs = await import('node:fs');
  const lines = fs.readFileSync(opt.trace, 'utf8').split('\n').filter((l) => l.trim());
  const reqs = lines.map((l, i) => {
    let o;
    try { o = JSON.parse(l); } catch { console.error(`server-load: ${opt.trace}:${i + 1}: not JSON`); process.exit(1); }
    for (const k of ['timestamp', 'input_length', 'output_length', 'hash_ids'])
      if (!(k in o)) { console.error(`server-load: ${opt.trace}:${i + 1}: no '${k}'`); process.exit(1); }
    return o;
  });
  const B = opt['block-tokens'];
  const block = (h) => {  // B token ids from a hash id (ids 3.. avoid BOS, EOS and unknown)
    let x = (Number(h) * 2654435761 + 1) >>> 0, out = [];
    for (let i = 0; i < B; i++) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; out.push(3 + (x % (nVocab - 3))); }
    return out;
  };
  const t0 = performance.now(), ts0 = reqs.length ? reqs[0].timestamp : 0;
  await Promise.all(reqs.map(async (q) => {
    if (q.input_length + q.output_length > nCtx || q.input_length < 1 || q.output_length < 1) { skipped++; return; }
    const prompt = q.hash_ids.flatMap(block).slice(0, q.input_length);
    while (prompt.length < q.input_length) prompt.push(3 + (prompt.length % (nVocab - 3)));
    const wait = (q.timestamp - ts0) * opt['time-scale'] - (performance.now() - t0);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    results.push(await run({ prompt, max_tokens: q.output_length, temperature: 0, ignore_eos: true }));
  }));
  results.wall = performance.now() - t0;
}

const ok = results.filter((r) => !r.error);
const errors = results.filter((r) => r.error);
const pct = (v, p) => {
  if (!v.length) return NaN;
  const s = [...v].sort((a, b) => a - b), r = p * (s.length - 1), i = Math.floor(r), f = r - i;
  return i + 1 < s.length ? s[i] * (1 - f) + s[i + 1] * f : s[i];
};
const ttft = ok.filter((r) => r.times.length).map((r) => r.times[0] - r.t0);
const itl = ok.flatMap((r) => r.times.slice(1).map((t, i) => t - r.times[i]));
const gen = ok.reduce((s, r) => s + (r.usage ? r.usage.completion_tokens : r.times.length), 0);
const promptTok = ok.reduce((s, r) => s + (r.usage ? r.usage.prompt_tokens : 0), 0);
const cached = ok.reduce((s, r) => s + (r.usage?.prompt_tokens_details?.cached_tokens ?? 0), 0);
const wall = results.wall / 1000;
const out = {
  mode: opt.trace ? 'trace' : 'synthetic', clients: opt.trace ? null : opt.clients, requests: ok.length,
  errors: errors.length, skipped, seconds: +wall.toFixed(3), requests_per_s: +(ok.length / wall).toFixed(3),
  generated_tokens_per_s: +(gen / wall).toFixed(2), ttft_p50_ms: +pct(ttft, 0.5).toFixed(1), ttft_p99_ms: +pct(ttft, 0.99).toFixed(1),
  itl_p50_ms: +pct(itl, 0.5).toFixed(2), itl_p99_ms: +pct(itl, 0.99).toFixed(2), prompt_tokens: promptTok,
  cached_tokens: cached, cached_share: promptTok ? +(cached / promptTok).toFixed(3) : 0,
};
if (opt.json) console.log(JSON.stringify(out));
else {
  console.log(`${out.requests} requests (${out.errors} failed, ${skipped} skipped) in ${out.seconds} s: ` +
              `${out.requests_per_s} requests/s, ${out.generated_tokens_per_s} generated tokens/s`);
  console.log(`TTFT p50 ${out.ttft_p50_ms} ms, p99 ${out.ttft_p99_ms} ms; inter-token p50 ${out.itl_p50_ms} ms, ` +
              `p99 ${out.itl_p99_ms} ms; cached ${cached} of ${promptTok} prompt tokens (${(100 * out.cached_share).toFixed(1)}%)`);
}
for (const e of errors.slice(0, 3)) console.error(`server-load: ${e.error}`);
process.exit(errors.length ? 1 : 0);
