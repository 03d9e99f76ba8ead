// sdk.test.mjs - the official `openai` npm package, unchanged, against a running chatq
// stack (started by tests/integration/test_sdk.c, which runs this file with
// `node --test` and fails when it fails).
//   CHATQ_BASE_URL  the api's OpenAI front, e.g. http://127.0.0.1:3000/v1
//   CHATQ_FAKE_URL  the fake upstream, for its /stats
import assert from 'node:assert/strict';
import { test } from 'node:test';

import OpenAI from 'openai';

const baseURL = process.env.CHATQ_BASE_URL;
const fakeURL = process.env.CHATQ_FAKE_URL;
assert.ok(baseURL && fakeURL, 'CHATQ_BASE_URL and CHATQ_FAKE_URL must be set');

const client = new OpenAI({ baseURL, apiKey: 'unused-by-an-open-gateway', maxRetries: 0 });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function settle(resp, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (resp.status === 'queued' || resp.status === 'in_progress') {
    assert.ok(Date.now() < deadline, `response ${resp.id} still ${resp.status}`);
    await sleep(50);
    resp = await client.responses.retrieve(resp.id);
  }
  return resp;
}

async function fakeStats() {
  const r = await fetch(`${fakeURL}/stats`);
  return r.json();
}

test('background create, poll, output_text', async () => {
  const created = await client.responses.create({
    model: 'gpt-4o-mini',
    input: 'hello from node',
    background: true,
  });
  assert.match(created.id, /^resp_[0-9a-f]{32}$/);
  assert.ok(['queued', 'in_progress', 'completed'].includes(created.status));
  const done = await settle(created);
  assert.equal(done.status, 'completed');
  assert.equal(done.output_text, 'Fake answer to: hello from node');
  assert.ok(done.usage.total_tokens > 0);
});

test('multi-turn input with instructions reaches the upstream in order', async () => {
  const resp = await client.responses.create({
    model: 'gpt-4o-mini',
    instructions: 'answer in French',
    temperature: 0.25,
    max_output_tokens: 64,
    input: [
      { role: 'user', content: 'one' },
      { role: 'assistant', content: 'un' },
      { role: 'user', content: [{ type: 'input_text', text: '[[fake echo-request]] two' }] },
    ],
  });
  assert.equal(resp.status, 'completed');
  const seen = JSON.parse(resp.output_text);
  assert.deepEqual(seen.messages, [
    { role: 'system', content: 'answer in French' },
    { role: 'user', content: 'one' },
    { role: 'assistant', content: 'un' },
    { role: 'user', content: '[[fake echo-request]] two' },
  ]);
  assert.equal(seen.temperature, 0.25);
  assert.equal(seen.max_tokens, 64);
});

test('non-background create answers the final object', async () => {
  const resp = await client.responses.create({ model: 'gpt-4o-mini', input: 'wait for me' });
  assert.equal(resp.status, 'completed');
  assert.equal(resp.output_text, 'Fake answer to: wait for me');
});

test('chat.completions.create', async () => {
  const c = await client.chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'hi chat' },
    ],
    max_tokens: 20,
  });
  assert.equal(c.object, 'chat.completion');
  assert.equal(c.choices[0].message.content, 'Fake answer to: hi chat');
  assert.equal(c.choices[0].finish_reason, 'stop');
  assert.ok(c.usage.total_tokens > 0);
});

test('an upstream 400 raises BadRequestError', async () => {
  await assert.rejects(
    client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: '[[fake status=400]] far too long' }],
    }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err.constructor.name}`);
      assert.equal(err.status, 400);
      assert.equal(err.code, 'context_length_exceeded');
      return true;
    },
  );
});

test('an upstream 401 ends a background response failed, with a code', async () => {
  const created = await client.responses.create({
    model: 'gpt-4o-mini',
    input: '[[fake status=401]] who am I',
    background: true,
  });
  const done = await settle(created);
  assert.equal(done.status, 'failed');
  assert.equal(done.error.code, 'invalid_api_key');
});

test('cancel aborts the slow upstream call', async () => {
  const before = (await fakeStats()).aborted;
  const created = await client.responses.create({
    model: 'gpt-4o-mini',
    input: '[[fake latency=60000]] take your time',
    background: true,
  });
  // Wait until the call is on the wire, so that the cancel has something to abort.
  let resp = created;
  const deadline = Date.now() + 20000;
  while (resp.status !== 'in_progress' || (await fakeStats()).in_flight === 0) {
    assert.ok(Date.now() < deadline, 'the call never started');
    await sleep(50);
    resp = await client.responses.retrieve(created.id);
  }
  const t0 = Date.now();
  const cancelled = await client.responses.cancel(created.id);
  assert.equal(cancelled.status, 'cancelled');
  while ((await fakeStats()).aborted <= before) {
    assert.ok(Date.now() - t0 < 5000, 'the upstream call was not aborted');
    await sleep(25);
  }
  // Cancelling again returns the same final object; reading it too.
  assert.equal((await client.responses.cancel(created.id)).status, 'cancelled');
  assert.equal((await client.responses.retrieve(created.id)).status, 'cancelled');
});

test('an unknown id raises NotFoundError', async () => {
  await assert.rejects(client.responses.retrieve('resp_0123456789abcdef0123456789abcdef'),
    OpenAI.NotFoundError);
});

test('a bad request raises BadRequestError naming the field', async () => {
  await assert.rejects(
    client.responses.create({
      model: 'gpt-4o-mini',
      input: 'x',
      tools: [{ type: 'web_search' }],
    }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err.constructor.name}`);
      assert.equal(err.param, 'tools');
      return true;
    },
  );
});

test('delete forgets the response', async () => {
  const resp = await client.responses.create({ model: 'gpt-4o-mini', input: 'forget me' });
  await client.responses.delete(resp.id);
  await assert.rejects(client.responses.retrieve(resp.id), OpenAI.NotFoundError);
});
