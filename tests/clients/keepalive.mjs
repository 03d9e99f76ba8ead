// keepalive.mjs - POST /chat the way a Node application does: the built-in fetch
// (undici, keep-alive), many requests at once, with pauses between them that
// land where a server's idle timeout may close a connection the client is about
// to reuse. Prints one JSON line: {"client", "sent", "accepted", "failures": {...}}.
//
//   node keepalive.mjs URL [CONNECTIONS] [ROUNDS] [KEY]
//
// Exits 0 when every POST got a 202, 1 otherwise.
const [url, conns = '200', rounds = '4', key = ''] = process.argv.slice(2);
if (!url) {
  console.error('usage: node keepalive.mjs URL [CONNECTIONS] [ROUNDS] [KEY]');
  process.exit(2);
}

// Pauses (ms) around the idle timeouts servers commonly use: none, half a
// second, and four to six seconds.
const pauses = [0, 0, 450, 500, 550, 3900, 4500, 5000, 5100, 5600];
const failures = {};
let sent = 0;
let accepted = 0;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function one(i, r) {
  const headers = { 'content-type': 'application/json' };
  if (key) headers.authorization = `Bearer ${key}`;
  sent++;
  try {
    const res = await fetch(`${url}/chat`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ message: `node fetch ${i}.${r}`, model: 'gpt-4o-mini' }),
    });
    await res.arrayBuffer();
    if (res.status === 202) accepted++;
    else failures[`status ${res.status}`] = (failures[`status ${res.status}`] || 0) + 1;
  } catch (e) {
    const why = String((e.cause && (e.cause.code || e.cause.message)) || e.message);
    failures[why] = (failures[why] || 0) + 1;
  }
}

async function worker(i) {
  for (let r = 0; r < Number(rounds); r++) {
    await one(i, r);
    await sleep(pauses[(i * 7 + r * 3) % pauses.length]);
  }
}

await Promise.all(Array.from({ length: Number(conns) }, (_, i) => worker(i)));
console.log(JSON.stringify({ client: 'node-fetch', sent, accepted, failures }));
process.exit(accepted === sent ? 0 : 1);
