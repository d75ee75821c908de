// Keys: search and paging, spent/cap bars, reserved amount, state; create (secret shown once),
// change a cap, revoke (after a confirmation).
import { api } from './api.js';
import { announce, confirmDialog, errorBox, errorField, field, h, money, nextId, secretBox, table, when } from './dom.js';

const PAGE = 20;

export async function keysPage(main) {
  const state = { q: '', offset: 0 };
  const listArea = h('div', { id: 'keys-list' });
  const secretArea = h('div', { id: 'key-secret' });
  const search = h('input', { type: 'search', id: 'key-search', placeholder: 'name, id, prefix or end user' });
  const searchForm = h('form', {
    role: 'search', class: 'inline',
    onsubmit: (e) => { e.preventDefault(); state.q = search.value; state.offset = 0; load(); },
  }, field('Search keys', search), h('button', { type: 'submit', class: 'secondary' }, 'Search'));

  async function load() {
    const page = await api('GET', '/v1/keys', { query: { q: state.q, limit: PAGE, offset: state.offset } });
    listArea.replaceChildren(keysTable(page.keys, load), pager(page, state, load));
  }

  main.replaceChildren(
    h('h1', {}, 'Keys'),
    secretArea,
    createForm(async (created) => {
      secretArea.replaceChildren(secretBox(`Secret of key “${created.name}”`, created.secret));
      state.offset = 0;
      await load();
      secretArea.querySelector('input').focus();
    }),
    h('section', { class: 'card' }, h('h2', {}, 'All keys'), searchForm, listArea),
  );
  await load();
}

function pager(page, state, load) {
  const from = page.keys.length ? state.offset + 1 : 0;
  return h('div', { class: 'pager' },
    h('button', { type: 'button', class: 'secondary', disabled: state.offset === 0,
      onclick: () => { state.offset = Math.max(0, state.offset - PAGE); load(); } }, 'Previous'),
    h('span', { id: 'keys-range' }, `${from}–${state.offset + page.keys.length} of ${page.total}`),
    h('button', { type: 'button', class: 'secondary', disabled: !page.has_more,
      onclick: () => { state.offset += PAGE; load(); } }, 'Next'));
}

export function keysTable(keys, reload) {
  const rows = keys.map((k) => keyRow(k, reload));
  return table(['Name', 'Key', 'End user', 'Scope', 'Spent / cap', { label: 'Reserved', class: 'num' }, 'State', 'Last used', 'Actions'],
    rows.length ? rows : [h('tr', {}, h('td', { colspan: 9, class: 'muted' }, 'No keys match.'))], { caption: 'Keys' });
}

function keyRow(k, reload) {
  const capMicros = k.max_spend_usd === null ? null : Math.round(k.max_spend_usd * 1e6);
  const bar = capMicros === null ? null : h('meter', {
    min: 0, max: Math.max(capMicros, 1), value: Math.min(k.spent_micros, capMicros), high: capMicros * 0.9,
    'aria-label': `${k.name}: spent against cap`,
  });
  const actions = h('td', { class: 'actions' });
  const row = h('tr', { dataset: { keyId: k.id } },
    h('td', {}, k.name),
    h('td', {}, h('code', {}, k.prefix)),
    h('td', {}, k.end_user_id ? h('a', { href: `#/end-users/${encodeURIComponent(k.end_user_id)}` }, k.end_user_id) : '—'),
    h('td', {}, k.scope),
    h('td', {}, bar, ' ', money(k.spent_micros), ' / ', money(capMicros)),
    h('td', { class: 'num' }, money(k.reserved_micros)),
    h('td', { class: k.revoked ? 'state-revoked' : 'state-active' }, k.revoked ? 'revoked' : 'active'),
    h('td', {}, when(k.last_used_at)),
    actions);
  const showButtons = () => actions.replaceChildren(...(k.revoked ? [] : [
    h('button', { type: 'button', class: 'secondary', onclick: () => actions.replaceChildren(capForm(k, showButtons, reload)) },
      'Change cap', h('span', { class: 'sr-only' }, ` of ${k.name}`)),
    h('button', {
      type: 'button', class: 'danger',
      onclick: async () => {
        if (!(await confirmDialog(`Revoke “${k.name}” (${k.prefix})? Every call with it is refused at once, and it can never be re-enabled.`, 'Revoke key'))) return;
        try {
          await api('DELETE', `/v1/keys/${encodeURIComponent(k.id)}`);
          announce(`Key ${k.name} revoked`);
          await reload();
        } catch (err) { actions.append(errorBox(err)); }
      },
    }, 'Revoke', h('span', { class: 'sr-only' }, ` ${k.name}`)),
  ]));
  showButtons();
  return row;
}

function capForm(k, cancel, reload) {
  const input = h('input', { type: 'number', min: 0, step: 'any', value: k.max_spend_usd ?? '', id: nextId('cap') });
  const capField = field('New cap in USD (empty: unlimited)', input);
  const form = h('form', {
    class: 'inline',
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        await api('PATCH', `/v1/keys/${encodeURIComponent(k.id)}`, { body: { max_spend_usd: input.value === '' ? null : Number(input.value) } });
        announce(`Cap of ${k.name} changed`);
        await reload();
      } catch (err) { capField.showError(err.message); input.focus(); }
    },
  }, capField, h('button', { type: 'submit' }, 'Save'), h('button', { type: 'button', class: 'secondary', onclick: cancel }, 'Cancel'));
  setTimeout(() => input.focus());
  return form;
}

function createForm(onCreated) {
  const controls = {
    name: h('input', { type: 'text', required: true, maxlength: 200, id: 'new-key-name' }),
    max_spend_usd: h('input', { type: 'number', min: 0, step: 'any', id: 'new-key-cap' }),
    end_user_id: h('input', { type: 'text', maxlength: 256, id: 'new-key-end-user' }),
    scope: h('select', { id: 'new-key-scope' }, h('option', { value: 'standard' }, 'standard'), h('option', { value: 'admin' }, 'admin')),
  };
  const fields = {
    name: field('Name', controls.name),
    max_spend_usd: field('Cap in USD', controls.max_spend_usd, { hint: 'Lifetime hard cap; empty: unlimited' }),
    end_user_id: field('End user id', controls.end_user_id, { hint: 'Optional: confines the key to this end user' }),
    scope: field('Scope', controls.scope),
  };
  const formError = h('div');
  const form = h('form', {
    'aria-labelledby': 'create-key-title',
    onsubmit: async (e) => {
      e.preventDefault();
      Object.values(fields).forEach((f) => f.showError(''));
      formError.replaceChildren();
      const body = { name: controls.name.value, scope: controls.scope.value };
      if (controls.max_spend_usd.value !== '') body.max_spend_usd = Number(controls.max_spend_usd.value);
      if (controls.end_user_id.value.trim()) body.end_user_id = controls.end_user_id.value.trim();
      try {
        const created = await api('POST', '/v1/keys', { body });
        form.reset();
        announce(`Key ${created.name} created`);
        await onCreated(created);
      } catch (err) {
        const name = errorField(err);
        if (fields[name]) { fields[name].showError(err.message); controls[name].focus(); } else formError.replaceChildren(errorBox(err));
      }
    },
  }, h('h2', { id: 'create-key-title' }, 'Create a key'), h('div', { class: 'grid' }, Object.values(fields)), formError,
  h('button', { type: 'submit' }, 'Create key'));
  return h('section', { class: 'card' }, form);
}
