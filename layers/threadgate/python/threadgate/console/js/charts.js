// Thin wrappers over Chart.js (vendored: ../vendor/chart.umd.min.js, a global `Chart`). Every
// chart has a data table next to it: the numbers stay readable without the picture.
import { h } from './dom.js';

const PALETTE = ['#2457c5', '#e07b00', '#1f7a3a', '#b42318', '#6b3fa0', '#0f7c8c', '#8c6d1f', '#c2417a', '#4d5b70', '#7a9c1f'];
export const color = (i) => PALETTE[i % PALETTE.length];

export function chartFigure(title, table) {
  const canvas = h('canvas', { role: 'img', 'aria-label': `${title} (the numbers are in the table below)` });
  const figure = h('figure', { class: 'card' }, h('figcaption', {}, title), h('div', { class: 'chart' }, canvas), table);
  return { figure, canvas };
}

export function drawBar(canvas, labels, datasets, { stacked = false, horizontal = false, money = true } = {}) {
  if (!window.Chart) return null; // the vendored file failed to load: the tables still show everything
  const axis = { stacked, beginAtZero: true };
  const valueAxis = { ...axis, ticks: money ? { callback: (v) => '$' + v } : { precision: 0 } };
  return new window.Chart(canvas, {
    type: 'bar',
    data: { labels, datasets: datasets.map((d, i) => ({ backgroundColor: color(i), ...d })) },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false, indexAxis: horizontal ? 'y' : 'x',
      scales: horizontal ? { x: valueAxis, y: axis } : { x: axis, y: valueAxis },
      plugins: { legend: { display: datasets.length > 1 } },
    },
  });
}

export function drawLine(canvas, labels, datasets) {
  if (!window.Chart) return null;
  return new window.Chart(canvas, {
    type: 'line',
    data: { labels, datasets: datasets.map((d, i) => ({ borderColor: color(i), backgroundColor: color(i), ...d })) },
    options: { animation: false, responsive: true, maintainAspectRatio: false, scales: { y: { beginAtZero: true } } },
  });
}

// UTC days from from_ms (inclusive) to to_ms (exclusive), as YYYY-MM-DD.
export function daysBetween(fromMs, toMs) {
  const days = [];
  const d = new Date(fromMs);
  d.setUTCHours(0, 0, 0, 0);
  for (; d.getTime() < toMs; d.setUTCDate(d.getUTCDate() + 1)) days.push(d.toISOString().slice(0, 10));
  return days;
}

export const dollars = (micros) => micros / 1e6;
