// Tools: list, register (a schema editor whose JSON and JSON Schema errors show inline), delete,
// and each tool's recent delivery attempts (outcome, status, latency).
import { api } from './api.js';
import { announce, confirmDialog, errorBox, errorField, field, h, secretBox, table, when } from './dom.js';

const STARTER_SCHEMA = '{\n  "type": "object",\n  "properties": {\n    "account_id": { "type": "string" }\n  },\n  "required": ["account_id"]\n}';

export async function toolsPage(main) {
  const listArea = h('div', { id: 'tools-list' });
  const secretArea = h('div', { id: 'tool-secret' });
  async function load() {
    const tools = await api('GET', '/v1/tools');
    listArea.replaceChildren(toolsTable(tools.data, load));
  }
  main.replaceChildren(h('h1', {}, 'Tools'), secretArea, registerForm(async (created) => {
    secretArea.replaceChildren(secretBox(`Webhook signing secret of “${created.name}”`, created.secret));
    await load();
    secretArea.querySelector('input').focus();
  }), h('section', { class: 'card' }, h('h2', {}, 'Registered tools'), listArea));
  await load();
}

function toolsTable(tools, reload) {
  const rows = tools.flatMap((t) => {
    const detail = h('tr', { class: 'deliveries', hidden: true }, h('td', { colspan: 5 }));
    const toggle = h('button', {
      type: 'button', class: 'secondary', 'aria-expanded': 'false',
      onclick: async () => {
        const open = toggle.getAttribute('aria-expanded') !== 'true';
        toggle.setAttribute('aria-expanded', String(open));
        detail.hidden = !open;
        if (open) await showDeliveries(t, detail.firstChild);
      },
    }, 'Deliveries', h('span', { class: 'sr-only' }, ` of ${t.name}`));
    const remove = h('button', {
      type: 'button', class: 'danger',
      onclick: async () => {
        if (!(await confirmDialog(`Delete tool “${t.name}”? Turns naming it are refused from now on.`, 'Delete tool'))) return;
        try { await api('DELETE', `/v1/tools/${encodeURIComponent(t.id)}`); announce(`Tool ${t.name} deleted`); await reload(); }
        catch (err) { remove.after(errorBox(err)); }
      },
    }, 'Delete', h('span', { class: 'sr-only' }, ` ${t.name}`));
    return [h('tr', { dataset: { toolId: t.id } },
      h('td', {}, h('strong', {}, t.name), h('div', { class: 'muted' }, h('code', {}, t.id))),
      h('td', {}, t.description),
      h('td', {}, h('code', {}, t.webhook_url)),
      h('td', { class: 'num' }, `${t.timeout_ms} ms`),
      h('td', { class: 'actions' }, toggle, remove)), detail];
  });
  return table(['Tool', 'Description', 'Webhook', { label: 'Timeout', class: 'num' }, 'Actions'],
    rows.length ? rows : [h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No tools registered.'))], { caption: 'Tools' });
}

async function showDeliveries(tool, cell) {
  cell.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
  try {
    const { data } = await api('GET', `/v1/tools/${encodeURIComponent(tool.id)}/deliveries`, { query: { limit: 100 } });
    const calls = new Map(); // tool_use_id -> its attempts, newest first
    for (const d of data) (calls.get(d.tool_use_id) || calls.set(d.tool_use_id, []).get(d.tool_use_id)).push(d);
    const rows = [...calls.values()].map((attempts) => {
      const last = attempts[0];
      return h('tr', { dataset: { toolUseId: last.tool_use_id } },
        h('td', {}, when(last.created_at)),
        h('td', {}, h('code', {}, last.tool_use_id)),
        h('td', { class: 'num' }, String(attempts.length)),
        h('td', { class: `outcome-${last.outcome}` }, last.outcome, last.reason ? ` — ${last.reason}` : ''),
        h('td', { class: 'num' }, last.status_code === null ? '—' : String(last.status_code)),
        h('td', {}, [...attempts].reverse().map((a) => `#${a.attempt} ${a.status_code ?? a.outcome} in ${a.latency_ms} ms`).join(', ')),
        h('td', {}, last.thread_id ? h('a', { href: `#/threads/${encodeURIComponent(last.thread_id)}` }, 'thread') : '—'));
    });
    cell.replaceChildren(h('h3', {}, `Recent deliveries of ${tool.name}`), table(
      ['When', 'Tool call', { label: 'Attempts', class: 'num' }, 'Outcome', { label: 'Status', class: 'num' }, 'Attempts (status, latency)', 'Thread'],
      rows.length ? rows : [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No deliveries in the last 30 days.'))]));
  } catch (err) { cell.replaceChildren(errorBox(err)); }
}

function registerForm(onCreated) {
  const controls = {
    name: h('input', { type: 'text', id: 'tool-name', required: true, pattern: '[a-zA-Z0-9_-]{1,64}' }),
    description: h('textarea', { id: 'tool-description', required: true, rows: 2 }),
    webhook_url: h('input', { type: 'url', id: 'tool-url', required: true, placeholder: 'https://app.example/tools/lookup' }),
    timeout_ms: h('input', { type: 'number', id: 'tool-timeout', min: 1000, max: 120000, value: '30000' }),
    input_schema: h('textarea', { id: 'tool-schema', class: 'code', spellcheck: 'false', value: STARTER_SCHEMA }),
  };
  const fields = {
    name: field('Name', controls.name, { hint: 'Letters, digits, _ and -; unique among your tools' }),
    description: field('Description', controls.description, { hint: 'What the model reads to decide when to call it' }),
    webhook_url: field('Webhook URL', controls.webhook_url),
    timeout_ms: field('Timeout per attempt (ms)', controls.timeout_ms),
    input_schema: field('Input schema (JSON Schema)', controls.input_schema, { hint: 'An object schema: {"type": "object", …}' }),
  };
  // Inline, while typing: the editor says at once when its text is not JSON or not an object
  // schema; the gateway's own JSON Schema check answers on submit, shown at the same place.
  const checkSchema = () => {
    const problem = schemaProblem(controls.input_schema.value);
    fields.input_schema.showError(problem);
    return problem === null;
  };
  controls.input_schema.addEventListener('input', checkSchema);
  const formError = h('div');
  const form = h('form', {
    'aria-labelledby': 'register-tool-title', novalidate: true,
    onsubmit: async (e) => {
      e.preventDefault();
      Object.values(fields).forEach((f) => f.showError(''));
      formError.replaceChildren();
      if (!checkSchema()) { controls.input_schema.focus(); return; }
      const body = {
        name: controls.name.value.trim(), description: controls.description.value, webhook_url: controls.webhook_url.value.trim(),
        timeout_ms: Number(controls.timeout_ms.value || 30000), input_schema: JSON.parse(controls.input_schema.value),
      };
      try {
        const created = await api('POST', '/v1/tools', { body });
        form.reset();
        controls.input_schema.value = STARTER_SCHEMA;
        announce(`Tool ${created.name} registered`);
        await onCreated(created);
      } catch (err) {
        const name = errorField(err);
        if (fields[name]) { fields[name].showError(err.message); controls[name].focus(); } else formError.replaceChildren(errorBox(err));
      }
    },
  }, h('h2', { id: 'register-tool-title' }, 'Register a tool'),
  h('div', { class: 'grid' }, fields.name, fields.webhook_url, fields.timeout_ms), fields.description, fields.input_schema, formError,
  h('button', { type: 'submit' }, 'Register tool'));
  return h('section', { class: 'card' }, form);
}

export function schemaProblem(text) {
  let schema;
  try { schema = JSON.parse(text); } catch (err) { return `Not valid JSON: ${err.message}`; }
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) return 'The schema must be a JSON object.';
  if (schema.type !== 'object') return 'The top-level "type" must be "object" (the model passes the tool one JSON object).';
  return null;
}
