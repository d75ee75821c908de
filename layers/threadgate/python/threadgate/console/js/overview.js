// Overview: this month's spend against the account budget, daily cost by model, top end users,
// requests / errors / 402s per day. Reads /v1/account, /v1/usage (group_by) and /v1/usage/requests.
import { api } from './api.js';
import { chartFigure, daysBetween, dollars, drawBar } from './charts.js';
import { h, money, table } from './dom.js';

const TOP_END_USERS = 10;

export async function overviewPage(main) {
  const [account, byDayModel, byEndUser, requests] = await Promise.all([
    api('GET', '/v1/account'),
    api('GET', '/v1/usage', { query: { group_by: 'day,model' } }),
    api('GET', '/v1/usage', { query: { group_by: 'end_user' } }),
    api('GET', '/v1/usage/requests'),
  ]);
  const days = daysBetween(byDayModel.from_ms, byDayModel.to_ms);
  const capMicros = account.max_spend_usd === null ? null : Math.round(account.max_spend_usd * 1e6);
  const totals = requests.data.reduce((t, d) => ({
    requests: t.requests + d.requests, errors: t.errors + d.errors, cap_refusals: t.cap_refusals + d.cap_refusals,
  }), { requests: 0, errors: 0, cap_refusals: 0 });

  const budget = capMicros === null
    ? h('p', { class: 'label' }, 'No account budget (unlimited)')
    : [h('meter', { min: 0, max: capMicros, value: Math.min(account.spent_micros, capMicros), 'aria-label': 'Account spend against its budget' }),
      h('p', { class: 'label' }, money(account.spent_micros), ' of ', money(capMicros), ' account budget (lifetime)')];

  const cost = costByModel(days, byDayModel);
  const users = topEndUsers(byEndUser);
  const counts = requestsPerDay(days, requests.data, totals);

  main.replaceChildren(
    h('h1', {}, 'Overview ', h('span', { class: 'muted' }, account.name)),
    h('div', { class: 'grid' },
      h('section', { class: 'card stat', id: 'month-spend' },
        h('div', { class: 'value' }, money(byDayModel.total_cost_micros)),
        h('div', { class: 'label' }, 'spent this month (UTC)'), budget),
      h('section', { class: 'card stat' },
        h('div', { class: 'value' }, money(account.reserved_micros)),
        h('div', { class: 'label' }, 'reserved by calls in flight')),
      h('section', { class: 'card stat', id: 'month-requests' },
        h('div', { class: 'value' }, String(totals.requests)),
        h('div', { class: 'label' }, `inference requests this month · ${totals.errors} errors · ${totals.cap_refusals} refused at a cap (402)`))),
    cost.figure, users.figure, counts.figure,
  );
  cost.draw(); users.draw(); counts.draw();
}

function costByModel(days, usage) {
  const models = [...new Set(usage.groups.map((g) => g.model))];
  const perModel = new Map(models.map((m) => [m, 0]));
  for (const g of usage.groups) perModel.set(g.model, perModel.get(g.model) + g.cost_micros);
  const rows = models.map((m) => h('tr', { dataset: { model: m } }, h('td', {}, m), h('td', { class: 'num' }, money(perModel.get(m)))));
  rows.push(h('tr', { class: 'total' }, h('td', {}, 'Total'), h('td', { class: 'num', id: 'cost-total' }, money(usage.total_cost_micros))));
  const { figure, canvas } = chartFigure('Daily cost by model (this month)', table(['Model', { label: 'Cost', class: 'num' }], rows, { caption: 'Cost by model this month' }));
  figure.id = 'chart-cost-by-model';
  const draw = () => drawBar(canvas, days.map((d) => d.slice(5)), models.map((m) => ({
    label: m,
    data: days.map((d) => dollars(usage.groups.filter((g) => g.day === d && g.model === m).reduce((s, g) => s + g.cost_micros, 0))),
  })), { stacked: true });
  return { figure, draw };
}

function topEndUsers(usage) {
  const top = usage.groups.slice(0, TOP_END_USERS);
  const name = (g) => g.end_user_id ?? '(no end user)';
  const rows = top.map((g) => h('tr', { dataset: { endUser: name(g) } },
    h('td', {}, g.end_user_id === null ? name(g) : h('a', { href: `#/end-users/${encodeURIComponent(g.end_user_id)}` }, g.end_user_id)),
    h('td', { class: 'num' }, money(g.cost_micros)), h('td', { class: 'num' }, String(g.request_count))));
  const { figure, canvas } = chartFigure(`Top end users by spend (this month, top ${TOP_END_USERS})`,
    table(['End user', { label: 'Spend', class: 'num' }, { label: 'Model calls', class: 'num' }], rows, { caption: 'Top end users' }));
  figure.id = 'chart-top-end-users';
  const draw = () => drawBar(canvas, top.map(name), [{ label: 'Spend', data: top.map((g) => dollars(g.cost_micros)) }], { horizontal: true });
  return { figure, draw };
}

function requestsPerDay(days, data, totals) {
  const byDay = new Map(data.map((d) => [d.day, d]));
  const series = (field) => days.map((d) => (byDay.get(d) || {})[field] || 0);
  const rows = data.map((d) => h('tr', {}, h('td', {}, d.day), h('td', { class: 'num' }, String(d.requests)),
    h('td', { class: 'num' }, String(d.errors)), h('td', { class: 'num' }, String(d.cap_refusals))));
  rows.push(h('tr', { class: 'total', id: 'requests-total' }, h('td', {}, 'Total'), h('td', { class: 'num' }, String(totals.requests)),
    h('td', { class: 'num' }, String(totals.errors)), h('td', { class: 'num' }, String(totals.cap_refusals))));
  const { figure, canvas } = chartFigure('Requests, errors and 402s per day (this month)',
    table(['Day', { label: 'Requests', class: 'num' }, { label: 'Errors', class: 'num' }, { label: '402s', class: 'num' }], rows, { caption: 'Requests per day' }));
  figure.id = 'chart-requests';
  const draw = () => drawBar(canvas, days.map((d) => d.slice(5)), [
    { label: 'Requests', data: series('requests') }, { label: 'Errors', data: series('errors') }, { label: '402s', data: series('cap_refusals') },
  ], { money: false });
  return { figure, draw };
}

