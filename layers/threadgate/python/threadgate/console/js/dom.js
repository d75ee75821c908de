// DOM building without HTML strings: every piece of text goes in as a text node, so user
// content (conversations, names, metadata) can never become markup; no HTML string is ever parsed.

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'style') throw new Error('inline styles are refused by the CSP; use a class');
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name === 'value' || name === 'checked') el[name] = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

let uid = 0;
export const nextId = (stem) => `${stem}-${++uid}`;

// Money is integer micro-dollars in the API; small amounts keep their micro precision.
export function usd(micros) {
  if (micros === null || micros === undefined) return 'unlimited';
  const dollars = micros / 1e6;
  return '$' + (Math.abs(micros) >= 10000 || micros === 0 ? dollars.toFixed(2) : dollars.toFixed(6));
}

export const money = (micros) => h('span', { dataset: { micros: String(micros ?? '') } }, usd(micros));

export function when(ms) {
  if (!ms) return '—';
  return new Date(ms).toISOString().replace('T', ' ').slice(0, 16) + ' UTC';
}

export function field(label, control, { hint, error } = {}) {
  const id = control.id || (control.id = nextId('f'));
  const errorEl = h('p', { class: 'field-error', id: `${id}-error`, 'aria-live': 'polite', hidden: !error }, error || '');
  const hintEl = hint ? h('span', { class: 'hint', id: `${id}-hint` }, hint) : null;
  control.setAttribute('aria-describedby', [hintEl && hintEl.id, errorEl.id].filter(Boolean).join(' '));
  const wrapper = h('div', { class: 'field' }, h('label', { for: id }, label), hintEl, control, errorEl);
  wrapper.showError = (message) => {
    errorEl.textContent = message || '';
    errorEl.hidden = !message;
    control.setAttribute('aria-invalid', message ? 'true' : 'false');
  };
  return wrapper;
}

export function announce(message) {
  const region = document.getElementById('announce');
  region.textContent = '';
  setTimeout(() => { region.textContent = message; }, 30);
}

// A modal confirmation (native <dialog>: focus stays inside, Escape cancels).
export function confirmDialog(message, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { 'aria-label': confirmLabel },
      h('p', {}, message),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'danger', onclick: () => dialog.close('yes') }, confirmLabel),
        h('button', { type: 'button', class: 'secondary', onclick: () => dialog.close('no') }, 'Cancel')));
    dialog.addEventListener('close', () => { dialog.remove(); resolve(dialog.returnValue === 'yes'); });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// A secret shown once, with a copy button (the API never returns it again).
export function secretBox(title, secret) {
  const input = h('input', { type: 'text', readonly: true, value: secret, 'aria-label': title, id: nextId('secret') });
  const copy = h('button', {
    type: 'button', class: 'secondary',
    onclick: async () => {
      try { await navigator.clipboard.writeText(secret); announce('Copied to the clipboard'); copy.textContent = 'Copied'; }
      catch { input.select(); announce('Select and copy the secret by hand'); }
    },
  }, 'Copy');
  return h('div', { class: 'secret-box', role: 'alert' },
    h('p', {}, h('strong', {}, title), ' — copy it now: it is shown only once.'),
    h('div', { class: 'actions' }, input, copy));
}

export function errorBox(err) {
  return h('p', { class: 'form-error', role: 'alert' }, err && err.message ? err.message : String(err));
}

// The field an API error names: its messages start with "<field>: " (API.md §2).
export function errorField(err) {
  const match = /^([a-z_]+)[:.]/.exec((err && err.message) || '');
  return err && err.param ? err.param : match ? match[1] : null;
}

export function table(headers, rows, { caption } = {}) {
  return h('table', {},
    caption ? h('caption', { class: 'sr-only' }, caption) : null,
    h('thead', {}, h('tr', {}, headers.map((x) => (typeof x === 'string'
      ? h('th', { scope: 'col' }, x) : h('th', { scope: 'col', class: x.class }, x.label))))),
    h('tbody', {}, rows));
}
