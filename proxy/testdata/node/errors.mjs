// Calls tokenhub with the official OpenAI Node SDK and checks that each error
// case raises the SDK's own typed error with tokenhub's status and code, and
// that a normal call and a stream work. Input: TOKENHUB_URL and TOKENHUB_CASES
// (JSON). Prints one line per case; exits 1 on any mismatch.
import OpenAI from 'openai';

const baseURL = process.env.TOKENHUB_URL;
const { key, cases } = JSON.parse(process.env.TOKENHUB_CASES);
let failed = 0;
const report = (ok, name, detail) => {
  if (!ok) failed++;
  console.log(`${ok ? 'ok' : 'FAIL'} ${name}${detail ? ': ' + detail : ''}`);
};

const client = new OpenAI({ baseURL, apiKey: key, maxRetries: 0 });
const res = await client.chat.completions.create({ model: 'mock', messages: [{ role: 'user', content: 'hi' }] });
report(res.choices[0].message.content.length > 0, 'chat');

let text = '';
const stream = await client.chat.completions.create({ model: 'mock', stream: true, messages: [{ role: 'user', content: 'hi' }] });
for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
report(text === res.choices[0].message.content, 'stream', `"${text}"`);

// The Node SDK asks for base64 embeddings by default and decodes them.
const emb = await client.embeddings.create({ model: 'mock', input: 'hi' });
report(Array.isArray(emb.data[0].embedding) && emb.data[0].embedding.length > 0, 'embeddings (base64 by default)');

for (const c of cases) {
  const cl = new OpenAI({ baseURL, apiKey: c.key, maxRetries: 0 });
  try {
    await cl.chat.completions.create({ model: c.model, messages: [{ role: 'user', content: 'hi' }], ...c.extra });
    report(false, c.name, 'no error');
  } catch (e) {
    const ok = e instanceof OpenAI[c.error] && e.status === c.status && e.code === c.code && (!c.param || e.param === c.param);
    report(ok, c.name, `${e.constructor.name} ${e.status} ${e.code}${c.param ? ' ' + e.param : ''}`);
  }
}

// The stored chat completions API is not served: a 404 the SDK classes.
try {
  await client.chat.completions.retrieve('chatcmpl-abc');
  report(false, 'stored chat completion', 'no error');
} catch (e) {
  const ok = e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'unsupported_endpoint';
  report(ok, 'stored chat completion', `${e.constructor.name} ${e.status} ${e.code}`);
}
process.exit(failed ? 1 : 0);
