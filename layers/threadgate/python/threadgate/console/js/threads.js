// Threads: the account's threads (newest activity first); one thread rendered as a conversation,
// tool calls and results folded, each turn's cost (usage grouped by request).
import { api } from './api.js';
import { h, money, when } from './dom.js';
import { moreButton, threadsTable } from './endusers.js';

const MAX_MESSAGES = 5000; // a page for people: beyond this, read the API

export async function threadsPage(main) {
  const page = await api('GET', '/v1/threads', { query: { limit: 20 } });
  const list = threadsTable(page.data);
  main.replaceChildren(h('h1', {}, 'Threads'), h('section', { class: 'card' }, list, moreButton(page, undefined, list)));
}

export async function threadPage(main, threadId) {
  const path = `/v1/threads/${encodeURIComponent(threadId)}`;
  const thread = await api('GET', path);
  const [messages, usage] = await Promise.all([
    allMessages(path),
    api('GET', '/v1/usage', { query: { thread_id: thread.id, group_by: 'request', from_ms: thread.created_at } }),
  ]);
  const costOf = new Map(usage.groups.map((g) => [g.request_id, g]));
  const lastOfTurn = new Map(messages.map((m) => [m.request_id, m.seq])); // a turn's cost goes under its last message
  main.replaceChildren(
    h('h1', {}, thread.title || 'Thread', ' ', h('code', { class: 'muted' }, thread.id)),
    h('p', {}, 'End user: ', thread.end_user_id ? h('a', { href: `#/end-users/${encodeURIComponent(thread.end_user_id)}` }, thread.end_user_id) : '—',
      ` · ${thread.message_count} messages · created ${when(thread.created_at)} · total `, money(usage.total_cost_micros)),
    h('section', { class: 'conversation', 'aria-label': 'Conversation' }, messages.map((m) => {
      const turn = lastOfTurn.get(m.request_id) === m.seq ? costOf.get(m.request_id) : null;
      return message(m, turn);
    })),
  );
}

async function allMessages(path) {
  const out = [];
  let after;
  do {
    const page = await api('GET', `${path}/messages`, { query: { limit: 200, after_seq: after } });
    out.push(...page.data);
    after = page.last_seq;
    if (!page.has_more) break;
  } while (out.length < MAX_MESSAGES);
  return out;
}

function message(m, turn) {
  const blocks = typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : m.content;
  const onlyResults = blocks.length > 0 && blocks.every((b) => b.type === 'tool_result');
  const who = m.role === 'user' ? (onlyResults ? 'Tool results' : 'User') : 'Assistant';
  return h('article', { class: `msg ${m.role}`, dataset: { seq: String(m.seq) }, 'aria-label': `${who}, message ${m.seq}` },
    h('header', {}, h('strong', {}, who), m.model ? h('span', {}, m.model) : null, h('span', {}, when(m.created_at)), h('span', {}, `#${m.seq}`)),
    blocks.map(block),
    turn ? h('div', { class: 'cost', dataset: { requestId: m.request_id } }, 'Turn cost ', money(turn.cost_micros),
      ` · ${turn.request_count} model call${turn.request_count === 1 ? '' : 's'} · ${turn.input_tokens} in / ${turn.output_tokens} out tokens`) : null);
}

function block(b) {
  switch (b.type) {
    case 'text':
      return h('p', { class: 'text' }, b.text);
    case 'tool_use':
      return h('details', { class: 'tool-call' }, h('summary', {}, 'Tool call: ', h('code', {}, b.name)),
        h('pre', {}, JSON.stringify(b.input, null, 2)), h('p', { class: 'muted' }, b.id));
    case 'tool_result':
      return h('details', { class: 'tool-result' },
        h('summary', {}, 'Tool result', b.is_error ? h('span', { class: 'error-tag' }, ' (error)') : null),
        h('pre', {}, resultText(b.content)), h('p', { class: 'muted' }, b.tool_use_id));
    case 'thinking':
      return h('details', {}, h('summary', {}, 'Thinking'), h('pre', {}, b.thinking || ''));
    case 'image':
    case 'document':
      return h('p', { class: 'muted' }, `[${b.type}]`);
    default:
      return h('details', {}, h('summary', {}, b.type || 'block'), h('pre', {}, JSON.stringify(b, null, 2)));
  }
}

function resultText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((c) => (c.type === 'text' ? c.text : JSON.stringify(c))).join('\n');
  return JSON.stringify(content, null, 2);
}
