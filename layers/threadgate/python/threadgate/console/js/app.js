// Router and sign-in. Pages live in one module each; a page renders into <main> and may throw
// an ApiError, which is shown in place (a 401 signs the operator out).
import { ApiError, adminKey, api, signIn, signOut } from './api.js';
import { errorBox, field, h } from './dom.js';
import { endUserPage, endUsersPage } from './endusers.js';
import { keysPage } from './keys.js';
import { overviewPage } from './overview.js';
import { threadPage, threadsPage } from './threads.js';
import { toolsPage } from './tools.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const signOutButton = document.getElementById('sign-out');

const ROUTES = [
  [/^#\/overview$/, overviewPage],
  [/^#\/keys$/, keysPage],
  [/^#\/end-users$/, endUsersPage],
  [/^#\/end-users\/(.+)$/, endUserPage],
  [/^#\/threads$/, threadsPage],
  [/^#\/threads\/(.+)$/, threadPage],
  [/^#\/tools$/, toolsPage],
];

function signInPage(message) {
  nav.hidden = true;
  signOutButton.hidden = true;
  const input = h('input', { type: 'password', id: 'admin-key', name: 'admin-key', autocomplete: 'off', required: true });
  const keyField = field('Admin key', input, { hint: 'Kept in this tab only (sessionStorage); every call goes to the public API.', error: message });
  const form = h('form', {
    class: 'card signin', 'aria-labelledby': 'signin-title',
    onsubmit: async (event) => {
      event.preventDefault();
      signIn(input.value.trim());
      try {
        await api('GET', '/v1/account'); // admin keys only: a standard key gets 403
        location.hash = '#/overview';
        render();
      } catch (err) {
        signOut();
        keyField.showError(err instanceof ApiError && err.status === 403
          ? 'That key is not an admin key.' : err.message);
        input.focus();
      }
    },
  }, h('h1', { id: 'signin-title' }, 'Sign in'), keyField, h('button', { type: 'submit' }, 'Sign in'));
  main.replaceChildren(h('section', { class: 'card signin' }, form));
  input.focus();
}

async function render() {
  if (!adminKey()) return signInPage();
  nav.hidden = false;
  signOutButton.hidden = false;
  const hash = ROUTES.some(([re]) => re.test(location.hash)) ? location.hash : '#/overview';
  for (const link of nav.querySelectorAll('a')) {
    const current = hash === link.getAttribute('href') || hash.startsWith(link.getAttribute('href') + '/');
    if (current) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }
  for (const [re, page] of ROUTES) {
    const match = re.exec(hash);
    if (!match) continue;
    main.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    try {
      await page(main, ...match.slice(1).map(decodeURIComponent));
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        signOut();
        return signInPage('The key was refused (revoked or unknown). Sign in again.');
      }
      main.replaceChildren(h('h1', {}, 'Something went wrong'), errorBox(err));
    }
    return;
  }
}

signOutButton.addEventListener('click', () => { signOut(); location.hash = ''; signInPage(); });
window.addEventListener('hashchange', async () => { await render(); main.focus({ preventScroll: true }); });
render();
