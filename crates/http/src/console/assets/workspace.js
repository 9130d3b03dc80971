// The workspace page: its settings, and the lifetimes of its keys.
import { api } from './api.js';
import { h, clear, announce } from './dom.js';

const UNITS = [['d', 86400, 'days'], ['h', 3600, 'hours'], ['m', 60, 'minutes'], ['s', 1, 'seconds']];

// Seconds as "30 days", "12 hours"…; "—" for none.
function lifetime(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  for (const [, size, name] of UNITS) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size} ${name}`;
  }
  return `${seconds} seconds`;
}

// A number and a unit, read as seconds (null when the number is empty).
function lifetimeInput(prefix, label, seconds) {
  const number = h('input', { type: 'number', min: '1', id: `${prefix}-value`, inputmode: 'numeric' });
  const unit = h('select', { id: `${prefix}-unit`, 'aria-label': `${label} unit` },
    UNITS.map(([code, , name]) => h('option', { value: code }, name)));
  unit.value = 'd';
  if (seconds !== null && seconds !== undefined) {
    const [code, size] = UNITS.find(([, size]) => seconds % size === 0) || ['s', 1];
    number.value = String(seconds / size);
    unit.value = code;
  }
  const read = () => {
    const t = number.value.trim();
    if (t === '') return null;
    if (!/^\d+$/.test(t) || Number(t) < 1) throw new Error(`${label}: a whole number, 1 or more, or empty for none.`);
    const [, size] = UNITS.find(([code]) => code === unit.value);
    return Number(t) * size;
  };
  const field = h('div', {},
    h('label', { for: `${prefix}-value` }, label),
    h('div', { class: 'inline' }, number, unit));
  return { field, read };
}

export async function workspacePage(view, ctx) {
  const me = ctx.me;
  view.append(h('h1', {}, 'Workspace'));
  if (!me.can.workspace_read) {
    view.append(h('p', {}, 'Your key may not read the workspace (it needs workspaces:read).'));
    return;
  }
  const path = '/v1/workspaces/' + encodeURIComponent(me.workspace_id);
  const details = h('dl', { class: 'details', id: 'workspace-details' });
  view.append(h('section', { class: 'card', 'aria-labelledby': 'workspace-details-title' },
    h('h2', { id: 'workspace-details-title' }, 'Settings'), details));

  function show(w) {
    clear(details);
    const row = (term, value, id) => details.append(h('dt', {}, term), h('dd', { id }, value));
    row('ID', h('code', {}, w.id), 'workspace-id');
    row('Name', w.name, 'workspace-name');
    row('Key prefix', h('code', {}, w.prefix), 'workspace-prefix');
    row('API access', w.api_access ? 'yes' : 'no', 'workspace-api-access');
    row('Limits across nodes', w.limit_sync, 'workspace-limit-sync');
    row('Default key lifetime', lifetime(w.default_key_ttl), 'workspace-default-ttl');
    row('Longest key lifetime', lifetime(w.max_key_ttl), 'workspace-max-ttl');
  }
  const w = await api('GET', path);
  show(w);
  if (!me.can.workspace_write) return;

  const fallback = lifetimeInput('ttl-default', 'Default key lifetime', w.default_key_ttl);
  const longest = lifetimeInput('ttl-max', 'Longest key lifetime', w.max_key_ttl);
  const error = h('p', { class: 'error', id: 'ttl-error', role: 'alert' });
  const form = h('form', { id: 'ttl-form', novalidate: true },
    h('p', { class: 'hint' }, 'A key created without an expiry gets the default lifetime (else the longest); a later expiry than the longest is refused. Leave a field empty for none.'),
    h('div', { class: 'grid' }, fallback.field, longest.field),
    error,
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'ttl-submit' }, 'Save lifetimes')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    let body;
    try {
      body = { default_key_ttl: fallback.read(), max_key_ttl: longest.read() };
      if (body.default_key_ttl !== null && body.max_key_ttl !== null && body.default_key_ttl > body.max_key_ttl) {
        throw new Error('The default lifetime cannot be longer than the longest.');
      }
    } catch (e) {
      error.textContent = e.message;
      return;
    }
    try {
      show(await api('PATCH', path, body));
      announce('Key lifetimes saved.');
    } catch (e) {
      error.textContent = 'The server refused: ' + e.message;
    }
  });
  view.append(h('section', { class: 'card', 'aria-labelledby': 'ttl-title' },
    h('h2', { id: 'ttl-title' }, 'Key lifetimes'), form));
}
