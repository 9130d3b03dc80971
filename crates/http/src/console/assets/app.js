// The console's entry point: sign-in, navigation, and the page router.
import { api, setCsrf, whenSignedOut } from './api.js';
import { clear, h } from './dom.js';
import { keysPage } from './keys.js';
import { keyPage } from './key.js';
import { toolsPage } from './tools.js';
import { auditPage } from './audit.js';
import { workspacePage } from './workspace.js';

const ctx = { me: null };
const $ = (id) => document.getElementById(id);

function showSignin(message) {
  ctx.me = null;
  setCsrf(null);
  $('top').hidden = true;
  clear($('view'));
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
  $('signin-key').value = '';
  $('signin-key').focus();
}

function showApp() {
  $('signin').hidden = true;
  $('top').hidden = false;
  $('whoami').textContent = 'Signed in as ' + (ctx.me.name || ctx.me.key_id);
  $('nav-tools').hidden = !ctx.me.can.tools_read;
  $('nav-audit').hidden = !ctx.me.can.audit_read;
  $('nav-workspace').hidden = !ctx.me.can.workspace_read;
  route();
}

async function route() {
  if (!ctx.me) return;
  const hash = location.hash || '#/keys';
  const view = clear($('view'));
  const parts = hash.slice(2).split('/').map(decodeURIComponent);
  for (const a of document.querySelectorAll('.top nav a')) {
    if (a.getAttribute('href') === '#/' + parts[0]) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  try {
    if (parts[0] === 'keys' && parts[1]) await keyPage(view, ctx, parts[1]);
    else if (parts[0] === 'tools') await toolsPage(view, ctx);
    else if (parts[0] === 'audit') await auditPage(view, ctx);
    else if (parts[0] === 'workspace') await workspacePage(view, ctx);
    else await keysPage(view, ctx);
  } catch (e) {
    if (e.status === 401) return;
    view.append(h('p', { class: 'error', role: 'alert' }, e.message));
  }
  const heading = view.querySelector('h1');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    heading.focus({ preventScroll: true });
  }
}

async function signIn(event) {
  event.preventDefault();
  const key = $('signin-key').value.trim();
  if (!key) {
    $('signin-error').textContent = 'Paste a key to sign in.';
    $('signin-key').setAttribute('aria-invalid', 'true');
    return;
  }
  $('signin-key').removeAttribute('aria-invalid');
  $('signin-submit').disabled = true;
  try {
    const me = await api('POST', '/console/api/login', { key });
    $('signin-key').value = '';
    ctx.me = me;
    setCsrf(me.csrf_token);
    if (!location.hash) location.hash = '#/keys';
    showApp();
  } catch (e) {
    $('signin-error').textContent = 'Sign-in refused: ' + e.message + ' (' + e.code + ')';
  } finally {
    $('signin-submit').disabled = false;
  }
}

async function signOut() {
  try {
    await api('POST', '/console/api/logout');
  } catch (e) {
    // Signed out either way: the page forgets the session.
  }
  location.hash = '';
  showSignin('Signed out.');
}

async function start() {
  $('signin-form').addEventListener('submit', signIn);
  $('signout').addEventListener('click', signOut);
  window.addEventListener('hashchange', route);
  whenSignedOut(() => showSignin('Your session ended; sign in again.'));
  ctx.reload = route;
  try {
    ctx.me = await api('GET', '/console/api/me');
    setCsrf(ctx.me.csrf_token);
    showApp();
  } catch (e) {
    showSignin('');
  }
}

start();
