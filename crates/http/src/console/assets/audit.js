// The audit log, newest pages on demand.
import { api, q } from './api.js';
import { h, when } from './dom.js';

export async function auditPage(view, ctx) {
  view.append(h('h1', {}, 'Audit log'));
  if (!ctx.me.can.audit_read) {
    view.append(h('p', {}, 'Your key may not read the audit log (it needs audit:read).'));
    return;
  }
  const body = h('tbody', { id: 'audit-body' });
  const more = h('button', { type: 'button', class: 'secondary', id: 'audit-more', disabled: true }, 'Load more');
  view.append(h('div', { class: 'table-wrap' }, h('table', { class: 'stack', id: 'audit-table' },
    h('caption', { class: 'visually-hidden' }, 'Audit entries'),
    h('thead', {}, h('tr', {}, ['#', 'When', 'Actor', 'Action', 'Target', 'Detail'].map((t) => h('th', { scope: 'col' }, t)))),
    body)), h('div', { class: 'pager' }, more));
  let cursor = null;
  async function load() {
    const page = await api('GET', '/v1/audit' + q({ limit: 50, cursor }));
    for (const e of page.items) {
      const detail = e.detail === null || e.detail === undefined ? '' : (typeof e.detail === 'string' ? e.detail : JSON.stringify(e.detail));
      body.append(h('tr', { 'data-action': e.action },
        h('td', { 'data-label': '#' }, String(e.seq)),
        h('td', { 'data-label': 'When' }, when(e.at)),
        h('td', { 'data-label': 'Actor', class: 'mono' }, String(e.actor ?? '')),
        h('td', { 'data-label': 'Action' }, e.action),
        h('td', { 'data-label': 'Target', class: 'mono' }, String(e.target ?? '')),
        h('td', { 'data-label': 'Detail', class: 'mono' }, detail)));
    }
    if (!body.children.length) body.append(h('tr', {}, h('td', { colspan: 6 }, 'No entries yet.')));
    cursor = page.next_cursor;
    more.disabled = !cursor;
  }
  more.addEventListener('click', load);
  await load();
}
