// unwrap.mjs DELIVERY.json - one webhook delivery, as the receiver logged it (the
// raw body and the Standard Webhooks headers), given to the official SDK's
// client.webhooks.unwrap() with the secret in WEBHOOK_SECRET: it verifies the
// signature and parses the event. Prints "<type> <data.id>"; exits 1 when the SDK
// refuses it.
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';

const d = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const client = new OpenAI({ apiKey: 'unused', webhookSecret: process.env.WEBHOOK_SECRET });
const headers = {
  'webhook-id': d.id,
  'webhook-timestamp': d.ts,
  'webhook-signature': d.signature,
};
try {
  const event = await client.webhooks.unwrap(d.raw, headers);
  console.log(`${event.type} ${event.data.id}`);
} catch (e) {
  console.log(`refused: ${e.message}`);
  process.exit(1);
}
