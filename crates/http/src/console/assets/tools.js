// The tools page: enable or disable, permission, cooldown, daily limit.
import { api } from './api.js';
import { h, clear, announce } from './dom.js';

export async function toolsPage(view, ctx) {
  const me = ctx.me;
  view.append(h('h1', {}, 'Tools'));
  if (!me.can.tools_read) {
    view.append(h('p', {}, 'Your key may not read tools (it needs tools:read).'));
    return;
  }
  const write = me.can.tools_write;
  const body = h('tbody', { id: 'tools-body' });
  const error = h('p', { class: 'error', id: 'tools-error', role: 'alert' });
  view.append(error, h('div', { class: 'table-wrap' }, h('table', { class: 'stack', id: 'tools-table' },
    h('caption', { class: 'visually-hidden' }, 'Tools of this workspace'),
    h('thead', {}, h('tr', {}, ['Tool', 'Enabled', 'Permission', 'Cooldown (ms)', 'Daily limit', ''].map((t) => h('th', { scope: 'col' }, t)))),
    body)));

  const numOrNull = (input, label) => {
    const t = input.value.trim();
    if (t === '') return null;
    if (!/^\d+$/.test(t)) throw new Error(`${label}: a whole number, 0 or more.`);
    return Number(t);
  };

  async function load() {
    const { items } = await api('GET', '/v1/tools');
    clear(body);
    for (const t of items) {
      const id = (s) => `tool-${t.name}-${s}`;
      if (!write) {
        body.append(h('tr', {},
          h('td', { 'data-label': 'Tool' }, h('code', {}, t.name)),
          h('td', { 'data-label': 'Enabled' }, t.enabled ? 'yes' : 'no'),
          h('td', { 'data-label': 'Permission' }, t.permission || '—'),
          h('td', { 'data-label': 'Cooldown (ms)' }, t.cooldown_ms ?? '—'),
          h('td', { 'data-label': 'Daily limit' }, t.daily_limit ?? '—'),
          h('td', {})));
        continue;
      }
      const enabled = h('input', { type: 'checkbox', id: id('enabled'), 'aria-label': `${t.name} enabled` });
      enabled.checked = !!t.enabled;
      const perm = h('input', { type: 'text', id: id('permission'), 'aria-label': `${t.name} permission`, autocomplete: 'off' });
      perm.value = t.permission || '';
      const cool = h('input', { type: 'number', min: '0', id: id('cooldown'), 'aria-label': `${t.name} cooldown in ms` });
      cool.value = t.cooldown_ms ?? '';
      const daily = h('input', { type: 'number', min: '0', id: id('daily'), 'aria-label': `${t.name} daily limit` });
      daily.value = t.daily_limit ?? '';
      const save = h('button', { type: 'button', id: id('save') }, 'Save');
      save.addEventListener('click', async () => {
        error.textContent = '';
        try {
          await api('PATCH', '/v1/tools/' + encodeURIComponent(t.name), {
            enabled: enabled.checked,
            permission: perm.value.trim() || null,
            cooldown_ms: numOrNull(cool, 'Cooldown'),
            daily_limit: numOrNull(daily, 'Daily limit'),
          });
          announce(`Tool ${t.name} saved.`);
          await load();
        } catch (e) {
          error.textContent = `${t.name}: ${e.message}`;
        }
      });
      body.append(h('tr', { 'data-tool': t.name },
        h('td', { 'data-label': 'Tool' }, h('code', {}, t.name)),
        h('td', { 'data-label': 'Enabled' }, enabled),
        h('td', { 'data-label': 'Permission' }, perm),
        h('td', { 'data-label': 'Cooldown (ms)' }, cool),
        h('td', { 'data-label': 'Daily limit' }, daily),
        h('td', {}, save)));
    }
    if (!items.length) body.append(h('tr', {}, h('td', { colspan: 6 }, 'No tools yet.')));
  }
  await load();

  if (!write) return;
  const name = h('input', { type: 'text', id: 'new-tool-name', required: true, autocomplete: 'off' });
  const perm = h('input', { type: 'text', id: 'new-tool-permission', autocomplete: 'off' });
  const newError = h('p', { class: 'error', id: 'new-tool-error', role: 'alert' });
  const form = h('form', { id: 'new-tool-form', novalidate: true },
    h('div', { class: 'grid' },
      h('div', {}, h('label', { for: 'new-tool-name' }, 'Name'), name),
      h('div', {}, h('label', { for: 'new-tool-permission' }, 'Permission required (optional)'), perm)),
    newError,
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'new-tool-submit' }, 'Add tool')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    newError.textContent = '';
    if (!name.value.trim()) {
      newError.textContent = 'Give the tool a name.';
      name.focus();
      return;
    }
    const body = { name: name.value.trim() };
    if (perm.value.trim()) body.permission = perm.value.trim();
    try {
      await api('POST', '/v1/tools', body);
      name.value = '';
      perm.value = '';
      await load();
    } catch (e) {
      newError.textContent = 'The server refused: ' + e.message;
    }
  });
  view.append(h('section', { class: 'card', 'aria-labelledby': 'new-tool-title' }, h('h2', { id: 'new-tool-title' }, 'Add a tool'), form));
}
