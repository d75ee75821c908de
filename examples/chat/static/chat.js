// The chat page. It talks only to this app's backend (same origin, session cookie); the backend
// calls the gateway with the signed-in end user's own capped key. All text goes in as text nodes.

const $ = (id) => document.getElementById(id);
let current = null; // the open thread's id

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const usd = (micros) => (micros === null || micros === undefined ? 'unlimited'
  : '$' + (micros / 1e6).toFixed(micros >= 10000 || micros === 0 ? 2 : 6));

async function call(method, path, body) {
  const response = await fetch(path, {
    method, credentials: 'same-origin',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return response;
}

// --- sign-up / sign-in ---------------------------------------------------------------------

async function authenticate(path) {
  const error = $('auth-error');
  error.hidden = true;
  const response = await call('POST', path, { username: $('username').value.trim(), password: $('password').value });
  if (response.ok) return start();
  const data = await response.json().catch(() => ({}));
  error.textContent = typeof data.error === 'string' ? data.error
    : 'Check your username (3–40 letters, digits, . _ -) and password (8 characters or more).';
  error.hidden = false;
}

$('auth-form').addEventListener('submit', (e) => { e.preventDefault(); authenticate('/api/signup'); });
$('login').addEventListener('click', () => { if ($('auth-form').reportValidity()) authenticate('/api/login'); });
$('logout').addEventListener('click', async () => { await call('POST', '/api/logout'); location.reload(); });

// --- spend, threads, history -----------------------------------------------------------------

async function refreshSpend() {
  const response = await call('GET', '/api/me');
  if (!response.ok) return null;
  const { key } = await response.json();
  $('spend').textContent = `Spent ${usd(key.spent_micros)} of ${usd(key.cap_micros)}`;
  return key;
}

async function loadThreads() {
  const { data } = await (await call('GET', '/api/threads')).json();
  const list = $('threads');
  list.replaceChildren(...data.map((t) => {
    const item = el('li');
    const button = el('button', '', t.title || 'New chat');
    button.dataset.threadId = t.id;
    if (t.id === current) button.setAttribute('aria-current', 'true');
    button.addEventListener('click', () => openThread(t.id));
    item.append(button);
    return item;
  }));
  return data;
}

async function openThread(id) {
  current = id;
  $('cap-message').hidden = true;
  const { data } = await (await call('GET', `/api/threads/${encodeURIComponent(id)}/messages`)).json();
  const conversation = $('conversation');
  conversation.replaceChildren();
  const tools = new Map();
  for (const m of data) {
    const blocks = typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : m.content;
    for (const b of blocks) {
      if (b.type === 'text' && b.text) conversation.append(el('div', `msg ${m.role}`, b.text));
      else if (b.type === 'tool_use') tools.set(b.id, toolCall(b.name, b.input, 'called'));
      else if (b.type === 'tool_result' && tools.has(b.tool_use_id)) toolDone(tools.get(b.tool_use_id), b.is_error, b.content);
    }
  }
  await loadThreads();
  $('message').focus();
}

function toolCall(name, input, state) {
  const box = el('div', 'tool');
  box.dataset.tool = name;
  const head = el('div');
  head.append(el('span', 'state', state === 'called' ? 'Called' : 'Calling'), ` ${name} `, el('code', '', input ? JSON.stringify(input) : ''));
  box.append(head);
  $('conversation').append(box);
  return box;
}

function toolDone(box, isError, output) {
  box.querySelector('.state').textContent = isError ? 'Failed' : 'Called';
  const text = typeof output === 'string' ? output
    : Array.isArray(output) ? output.map((c) => c.text ?? JSON.stringify(c)).join('\n') : JSON.stringify(output);
  box.append(el('pre', 'result', text));
}

// --- sending a message: the gateway's SSE stream, relayed by the backend -------------------------

// Server-sent events over fetch (EventSource cannot POST): events are separated by a blank line,
// each `event:` / `data:` line carries one field. Small enough to keep here rather than vendor.
async function* sse(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const raw = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = 'message';
      const data = [];
      for (const line of raw.split('\n')) {
        if (line.startsWith('event:')) type = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) yield { type, data: JSON.parse(data.join('\n')) };
    }
  }
}

async function showCap(error) {
  const key = await refreshSpend();
  const spent = key ? ` You have spent ${usd(key.spent_micros)} of your ${usd(key.cap_micros)}.` : '';
  $('cap-message').textContent = `You have reached your spending limit, so this message was not answered.${spent}`
    + (error && error.message ? ` (${error.message})` : '');
  $('cap-message').hidden = false;
}

async function send(text) {
  const conversation = $('conversation');
  conversation.append(el('div', 'msg user', text));
  $('send').disabled = true;
  try {
    const response = await call('POST', `/api/threads/${encodeURIComponent(current)}/messages`, { content: text });
    if (response.status === 402) return showCap((await response.json().catch(() => ({}))).error);
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      conversation.append(el('div', 'msg error', (data.error && data.error.message) || `Error ${response.status}`));
      return;
    }
    let bubble = null; // the assistant text block being streamed
    const tools = new Map(); // tool_use_id -> its element
    const inputs = new Map(); // tool_use_id -> its input JSON, as streamed
    let toolUse = null;
    for await (const { type, data } of sse(response)) {
      if (type === 'content_block_start' && data.content_block.type === 'text') {
        bubble = el('div', 'msg assistant');
        bubble.append(document.createTextNode(''));
        conversation.append(bubble);
      } else if (type === 'content_block_delta' && data.delta.type === 'text_delta' && bubble) {
        bubble.firstChild.appendData(data.delta.text); // token by token, as text
        conversation.scrollTop = conversation.scrollHeight;
      } else if (type === 'content_block_start' && data.content_block.type === 'tool_use') {
        bubble = null;
        toolUse = data.content_block.id;
        inputs.set(toolUse, '');
      } else if (type === 'content_block_delta' && data.delta.type === 'input_json_delta' && toolUse) {
        inputs.set(toolUse, inputs.get(toolUse) + data.delta.partial_json);
      } else if (type === 'qlaud.tool_dispatch_start') {
        let input = null;
        try { input = JSON.parse(inputs.get(data.tool_use_id) || 'null'); } catch { /* shown without input */ }
        tools.set(data.tool_use_id, toolCall(data.name, input, 'calling'));
      } else if (type === 'qlaud.tool_dispatch_done' && tools.has(data.tool_use_id)) {
        toolDone(tools.get(data.tool_use_id), data.is_error, data.output);
      } else if (type === 'qlaud.error') {
        const kind = data.error && data.error.type;
        if (kind === 'key_cap_exceeded' || kind === 'account_budget_exceeded') await showCap(data.error);
        else conversation.append(el('div', 'msg error', data.error ? data.error.message : 'The answer broke off.'));
      }
    }
  } finally {
    $('send').disabled = false;
    await refreshSpend();
    await loadThreads();
  }
}

$('composer').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('message').value.trim();
  if (!text || !current) return;
  $('message').value = '';
  send(text);
});
$('message').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('composer').requestSubmit(); }
});

$('new-chat').addEventListener('click', async () => {
  const thread = await (await call('POST', '/api/threads')).json();
  await openThread(thread.id);
});

$('search-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const results = $('search-results');
  const response = await call('GET', `/api/search?q=${encodeURIComponent($('search').value)}`);
  const { data } = await response.json();
  results.replaceChildren(...(data.length ? data.map((hit) => {
    const item = el('li');
    const open = el('button', 'secondary', hit.snippet);
    open.addEventListener('click', () => openThread(hit.thread_id));
    item.append(open);
    return item;
  }) : [el('li', '', 'Nothing found.')]));
});

async function start() {
  const key = await refreshSpend();
  $('auth').hidden = key !== null;
  $('app').hidden = key === null;
  if (key === null) { $('username').focus(); return; }
  const threads = await loadThreads();
  if (threads.length) await openThread(threads[0].id);
}

start();
