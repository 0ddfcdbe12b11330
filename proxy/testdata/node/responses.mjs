// Calls tokenhub's POST /v1/responses with the official OpenAI Node SDK:
// client.responses.create (buffered and streamed), the SDK's
// responses.stream helper, typed errors, and a stream cut at the budget.
// Input: TOKENHUB_URL and TOKENHUB_KEYS (JSON: all, only, month). Prints
// one line per check; exits 1 on any failure.
import OpenAI from 'openai';

const baseURL = process.env.TOKENHUB_URL;
const keys = JSON.parse(process.env.TOKENHUB_KEYS);
const input = 'Say something short about the mock.';
let failed = 0;
const report = (ok, name, detail) => {
  if (!ok) failed++;
  console.log(`${ok ? 'ok' : 'FAIL'} ${name}${detail ? ': ' + detail : ''}`);
};
const client = (key) => new OpenAI({ baseURL, apiKey: key, maxRetries: 0 });

const res = await client(keys.all).responses.create({ model: 'mock', input });
report(res.object === 'response' && res.status === 'completed' && res.output_text.length > 0 &&
  res.usage.input_tokens === 9 && res.usage.output_tokens > 0 &&
  res.usage.input_tokens_details.cached_tokens === 0 && res.usage.output_tokens_details.reasoning_tokens === 0,
  'responses.create', JSON.stringify(res.usage));

let text = '';
const types = [];
let last;
const stream = await client(keys.all).responses.create({ model: 'mock', input, stream: true });
for await (const ev of stream) {
  types.push(ev.type);
  if (ev.type === 'response.output_text.delta') text += ev.delta;
  last = ev;
}
report(text === res.output_text && types[0] === 'response.created' && last.type === 'response.completed' &&
  last.response.usage.output_tokens === res.usage.output_tokens, 'responses.create stream', `${types.length} events, last ${last?.type}`);

const helper = client(keys.all).responses.stream({ model: 'mock', input });
const final = await helper.finalResponse();
// This SDK's helper adds output_text only to parsed responses: read the part.
const finalText = final.output[0]?.content[0]?.text;
report(final.status === 'completed' && finalText === res.output_text, 'responses.stream helper', `"${finalText}"`);

const errors = [
  ['model outside plan', keys.only, { model: 'other', input }, 'PermissionDeniedError', 403, 'model_not_allowed'],
  ['unknown model', keys.all, { model: 'no-such-model', input }, 'NotFoundError', 404, 'model_not_found'],
  ['background', keys.all, { model: 'mock', input, background: true }, 'BadRequestError', 400, 'unsupported_parameter'],
  ['unknown key', 'sk-nope', { model: 'mock', input }, 'AuthenticationError', 401, 'invalid_api_key'],
];
for (const [name, key, params, cls, status, code] of errors) {
  try {
    await client(key).responses.create(params);
    report(false, name, 'no error');
  } catch (e) {
    report(e instanceof OpenAI[cls] && e.status === status && e.code === code, name, `${e.constructor.name} ${e.status} ${e.code}`);
  }
}

// Cut at the month's budget: the stream ends with the Responses error event.
let deltas = 0;
last = undefined;
const cut = await client(keys.month).responses.create({ model: 'long', input, stream: true });
for await (const ev of cut) {
  if (ev.type === 'response.output_text.delta') deltas++;
  last = ev;
}
report(last?.type === 'error' && last.code === 'budget_exceeded' && deltas > 0, 'stream cut at the budget',
  `${deltas} deltas, last ${JSON.stringify(last)?.slice(0, 120)}`);
process.exit(failed ? 1 : 0);
