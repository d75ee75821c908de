// End users: pick one (or a top spender of the month); one end user's keys, threads, spend over
// the last 90 days and a search over their history (the same /v1/search the app uses).
import { api } from './api.js';
import { chartFigure, daysBetween, dollars, drawLine } from './charts.js';
import { errorBox, field, h, money, table, when } from './dom.js';
import { keysTable } from './keys.js';

const SPEND_DAYS = 90;
const DAY_MS = 86400000;

export async function endUsersPage(main) {
  const input = h('input', { type: 'text', id: 'end-user-id', required: true, maxlength: 256 });
  const form = h('form', {
    class: 'inline', onsubmit: (e) => { e.preventDefault(); location.hash = `#/end-users/${encodeURIComponent(input.value.trim())}`; },
  }, field('End user id', input), h('button', { type: 'submit' }, 'Open'));
  const usage = await api('GET', '/v1/usage', { query: { group_by: 'end_user' } });
  const rows = usage.groups.filter((g) => g.end_user_id !== null).map((g) => h('tr', {},
    h('td', {}, h('a', { href: `#/end-users/${encodeURIComponent(g.end_user_id)}` }, g.end_user_id)),
    h('td', { class: 'num' }, money(g.cost_micros)), h('td', { class: 'num' }, String(g.request_count))));
  main.replaceChildren(h('h1', {}, 'End users'), h('section', { class: 'card' }, form),
    h('section', { class: 'card' }, h('h2', {}, 'End users with spend this month'),
      table(['End user', { label: 'Spend', class: 'num' }, { label: 'Model calls', class: 'num' }],
        rows.length ? rows : [h('tr', {}, h('td', { colspan: 3, class: 'muted' }, 'No spend this month.'))])));
}

export async function endUserPage(main, endUser) {
  const now = Date.now();
  const from = now - SPEND_DAYS * DAY_MS;
  const [keys, threads, spend] = await Promise.all([
    api('GET', '/v1/keys', { query: { end_user_id: endUser } }),
    api('GET', '/v1/threads', { query: { end_user_id: endUser, limit: 20 } }),
    api('GET', '/v1/usage', { query: { end_user_id: endUser, group_by: 'day', from_ms: from } }),
  ]);
  const reloadKeys = async () => {
    const fresh = await api('GET', '/v1/keys', { query: { end_user_id: endUser } });
    keysArea.replaceChildren(keysTable(fresh.keys, reloadKeys));
  };
  const keysArea = h('div', {}, keysTable(keys.keys, reloadKeys));
  const threadList = threadsTable(threads.data);
  const more = moreButton(threads, endUser, threadList);
  const days = daysBetween(from, now + 1);
  const byDay = new Map(spend.groups.map((g) => [g.day, g.cost_micros]));
  const chart = chartFigure(`Spend per day, last ${SPEND_DAYS} days`, h('p', {}, 'Total: ', money(spend.total_cost_micros),
    ` over ${spend.request_count} model calls`));
  chart.figure.id = 'chart-end-user-spend';

  main.replaceChildren(
    h('h1', {}, 'End user ', h('code', {}, endUser)),
    h('section', { class: 'card' }, h('h2', {}, 'Keys'), keysArea),
    chart.figure,
    h('section', { class: 'card' }, h('h2', {}, 'Threads'), threadList, more),
    searchSection(endUser),
  );
  drawLine(chart.canvas, days.map((d) => d.slice(5)), [{ label: 'Spend (USD)', data: days.map((d) => dollars(byDay.get(d) || 0)) }]);
}

export function threadsTable(threads) {
  const rows = threads.map(threadRow);
  return table(['Thread', 'End user', 'Title', { label: 'Messages', class: 'num' }, 'Last active'],
    rows.length ? rows : [h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No threads.'))], { caption: 'Threads' });
}

export function threadRow(t) {
  return h('tr', { dataset: { threadId: t.id } },
    h('td', {}, h('a', { href: `#/threads/${encodeURIComponent(t.id)}` }, h('code', {}, t.id))),
    h('td', {}, t.end_user_id ? h('a', { href: `#/end-users/${encodeURIComponent(t.end_user_id)}` }, t.end_user_id) : '—'),
    h('td', {}, t.title || '—'), h('td', { class: 'num' }, String(t.message_count)), h('td', {}, when(t.last_active_at)));
}

export function moreButton(page, endUser, tableEl) {
  let cursor = page.next_cursor;
  const button = h('button', {
    type: 'button', class: 'secondary', hidden: !page.has_more,
    onclick: async () => {
      const next = await api('GET', '/v1/threads', { query: { end_user_id: endUser, limit: 20, before: cursor } });
      tableEl.querySelector('tbody').append(...next.data.map(threadRow));
      cursor = next.next_cursor;
      button.hidden = !next.has_more;
    },
  }, 'Older threads');
  return button;
}

function searchSection(endUser) {
  const input = h('input', { type: 'search', id: 'history-search', required: true, maxlength: 2000 });
  const results = h('div', { id: 'search-results', 'aria-live': 'polite' });
  const form = h('form', {
    role: 'search', class: 'inline',
    onsubmit: async (e) => {
      e.preventDefault();
      results.replaceChildren(h('p', { class: 'muted' }, 'Searching…'));
      try {
        const found = await api('GET', '/v1/search', { query: { q: input.value, end_user_id: endUser, limit: 20 } });
        results.replaceChildren(found.data.length ? h('ol', { class: 'results' }, found.data.map((r) => h('li', {},
          h('a', { href: `#/threads/${encodeURIComponent(r.thread_id)}` }, `${r.thread_id} #${r.seq}`),
          ` · ${r.role} · ${when(r.created_at)} · score ${r.score.toFixed(3)}`,
          h('div', { class: 'snippet' }, r.snippet)))) : h('p', { class: 'muted' }, 'Nothing found.'));
      } catch (err) { results.replaceChildren(errorBox(err)); }
    },
  }, field(`Search ${endUser}’s history`, input), h('button', { type: 'submit' }, 'Search'));
  return h('section', { class: 'card' }, h('h2', {}, 'Search their history'), form, results);
}
