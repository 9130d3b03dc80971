// The keys page: list, search, filter, pages, and the create dialog.
import { api, q } from './api.js';
import { h, clear, when, secretDialog, announce } from './dom.js';
import { ipRulesEditor, limitsEditor } from './key.js';

const STATUSES = ['active', 'expired', 'revoked', 'disabled'];

export async function keysPage(view, ctx) {
  const me = ctx.me;
  const search = h('input', { type: 'search', id: 'key-search', placeholder: 'Name contains…' });
  const status = h('select', { id: 'key-status' },
    h('option', { value: '' }, 'All'), STATUSES.map((s) => h('option', { value: s }, s)));
  const create = me.can.keys_write
    ? h('button', { type: 'button', id: 'create-key', onclick: () => createDialog(ctx, reload) }, 'Create key')
    : null;
  const body = h('tbody', { id: 'keys-body' });
  const count = h('span', { class: 'hint', id: 'keys-count' });
  const prev = h('button', { type: 'button', class: 'secondary', id: 'keys-prev', disabled: true }, 'Previous page');
  const next = h('button', { type: 'button', class: 'secondary', id: 'keys-next', disabled: true }, 'Next page');
  view.append(
    h('h1', {}, 'Keys'),
    h('div', { class: 'toolbar' },
      h('div', {}, h('label', { for: 'key-search' }, 'Search by name'), search),
      h('div', {}, h('label', { for: 'key-status' }, 'Status'), status),
      create),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'stack', id: 'keys-table' },
        h('caption', { class: 'visually-hidden' }, 'Keys of this workspace'),
        h('thead', {}, h('tr', {}, ['Name', 'Start', 'Status', 'Created', 'Last used', 'Expires'].map((t) => h('th', { scope: 'col' }, t)))),
        body)),
    h('div', { class: 'pager' }, prev, next, count));

  // Cursors of the pages before this one, for "Previous page".
  const cursors = [];
  let cursor = null;
  let page = { items: [], next_cursor: null };

  function render() {
    const needle = search.value.trim().toLowerCase();
    const want = status.value;
    const rows = page.items.filter((k) =>
      (!needle || (k.name || '').toLowerCase().includes(needle)) && (!want || k.status === want));
    clear(body);
    for (const k of rows) {
      body.append(h('tr', { 'data-key-id': k.id },
        h('td', { 'data-label': 'Name' }, h('a', { href: '#/keys/' + encodeURIComponent(k.id) }, k.name || '(no name)')),
        h('td', { 'data-label': 'Start', class: 'mono' }, k.start),
        h('td', { 'data-label': 'Status' }, h('span', { class: 'badge status-' + k.status }, k.status)),
        h('td', { 'data-label': 'Created' }, when(k.created_at)),
        h('td', { 'data-label': 'Last used' }, when(k.last_used_at)),
        h('td', { 'data-label': 'Expires' }, k.expires_at ? when(k.expires_at) : 'never')));
    }
    if (!rows.length) body.append(h('tr', {}, h('td', { colspan: 6 }, page.items.length ? 'No key on this page matches.' : 'No keys yet.')));
    count.textContent = `${rows.length} of ${page.items.length} keys on this page`;
    prev.disabled = cursors.length === 0;
    next.disabled = !page.next_cursor;
  }

  async function load() {
    page = await api('GET', '/v1/api-keys' + q({ limit: 50, cursor }));
    render();
    announce(`${page.items.length} keys loaded`);
  }
  async function reload() {
    await load();
  }
  search.addEventListener('input', render);
  status.addEventListener('change', render);
  next.addEventListener('click', async () => {
    cursors.push(cursor);
    cursor = page.next_cursor;
    await load();
  });
  prev.addEventListener('click', async () => {
    cursor = cursors.pop() || null;
    await load();
  });
  await load();
}

function localToIso(value) {
  if (!value) return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

export { localToIso };

// The create dialog: every field of POST /v1/api-keys.
function createDialog(ctx, reload) {
  const me = ctx.me;
  const err = (id) => h('p', { class: 'error', id, role: 'alert' });
  const name = h('input', { type: 'text', id: 'create-name', required: true, 'aria-describedby': 'create-name-error', autocomplete: 'off' });
  const nameError = err('create-name-error');
  const expires = h('input', { type: 'datetime-local', id: 'create-expires' });
  const expireNow = h('input', { type: 'checkbox', id: 'create-expire-now' });
  const perms = me.offer_permissions.map((p) =>
    h('label', { class: 'inline' }, h('input', { type: 'checkbox', name: 'perm', value: p, 'data-perm': p }), p));
  const rules = ipRulesEditor('create', []);
  const limits = limitsEditor('create', {});
  const tools = h('input', { type: 'text', id: 'create-tools', placeholder: 'gl_ping, search', autocomplete: 'off' });
  const signUser = h('input', { type: 'text', id: 'create-signing-user', autocomplete: 'off' });
  const signPolicy = h('select', { id: 'create-signing-policy' },
    h('option', { value: 'monotonic' }, 'monotonic (each nonce larger than the last)'),
    h('option', { value: 'unique' }, 'unique (each nonce used once)'));
  const formError = err('create-error');
  const submit = h('button', { type: 'submit', id: 'create-submit' }, 'Create key');
  const cancel = h('button', { type: 'button', class: 'secondary', id: 'create-cancel' }, 'Cancel');
  const form = h('form', { id: 'create-form', novalidate: true },
    h('label', { for: 'create-name' }, 'Name (required)'), name, nameError,
    h('fieldset', {}, h('legend', {}, 'Expiry'),
      h('label', { for: 'create-expires' }, 'Expires at (your local time; empty: never)'), expires,
      h('label', { class: 'inline', for: 'create-expire-now' }, expireNow, 'Expire now (create it already expired)')),
    h('fieldset', {}, h('legend', {}, 'Permissions'),
      h('p', { class: 'hint' }, 'Only permissions your key holds are offered. None ticked: the new key gets yours.'),
      perms),
    rules.element,
    limits.element,
    h('fieldset', {}, h('legend', {}, 'Tools'),
      h('label', { for: 'create-tools' }, 'Tools this key may call (comma separated; empty: all)'), tools),
    h('fieldset', {}, h('legend', {}, 'Signing identity (optional)'),
      h('label', { for: 'create-signing-user' }, 'User id (makes the key sign its requests)'), signUser,
      h('label', { for: 'create-signing-policy' }, 'Nonce policy'), signPolicy),
    formError,
    h('div', { class: 'actions' }, cancel, submit));
  const d = h('dialog', { id: 'create-dialog', 'aria-labelledby': 'create-title' }, h('h2', { id: 'create-title' }, 'Create a key'), form);
  cancel.addEventListener('click', () => d.close());
  d.addEventListener('close', () => d.remove());
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    formError.textContent = '';
    nameError.textContent = '';
    name.removeAttribute('aria-invalid');
    if (!name.value.trim()) {
      nameError.textContent = 'Give the key a name.';
      name.setAttribute('aria-invalid', 'true');
      name.focus();
      return;
    }
    const body = { name: name.value.trim() };
    const exp = localToIso(expires.value);
    if (exp === undefined) {
      formError.textContent = 'Expires at: not a date and time.';
      return;
    }
    if (exp) body.expires_at = exp;
    if (expireNow.checked) body.expire_now = true;
    const chosen = perms.map((l) => l.querySelector('input')).filter((c) => c.checked).map((c) => c.value);
    if (chosen.length) body.permissions = chosen;
    const ipRules = rules.value();
    if (ipRules.error) {
      formError.textContent = ipRules.error;
      return;
    }
    if (ipRules.rules.length) body.ip_rules = ipRules.rules;
    const lim = limits.value();
    if (lim.error) {
      formError.textContent = lim.error;
      return;
    }
    if (Object.keys(lim.limits).length) body.limits = lim.limits;
    const toolList = tools.value.split(',').map((t) => t.trim()).filter(Boolean);
    if (toolList.length) body.tools = toolList;
    if (signUser.value.trim()) body.signing = { user_id: signUser.value.trim(), nonce_policy: signPolicy.value };
    submit.disabled = true;
    try {
      const created = await api('POST', '/v1/api-keys', body);
      d.close();
      await secretDialog('Key created: ' + created.name, created);
      await reload();
    } catch (e) {
      formError.textContent = 'The server refused: ' + e.message;
    } finally {
      submit.disabled = false;
    }
  });
  document.body.append(d);
  d.showModal();
  name.focus();
}
