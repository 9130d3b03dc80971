// One key: details, edit, rotate, revoke, delete, and its usage chart.
import { api } from './api.js';
import { h, clear, when, confirmDialog, secretDialog, announce } from './dom.js';
import { usageChart, RANGES } from './chart.js';

// ---- shared editors (also used by the create dialog) ----------------------

function isV4(text) {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  return !!m && m.slice(1).every((p) => Number(p) <= 255 && (p === '0' || !p.startsWith('0')));
}

function isV6(text) {
  if (!text.includes(':') || !/^[0-9A-Fa-f:.]+$/.test(text)) return false;
  try {
    new URL('http://[' + text + ']/');
    return true;
  } catch (e) {
    return false;
  }
}

// Whether `text` is an address or a network in CIDR notation.
export function validCidr(text) {
  const parts = text.split('/');
  if (parts.length > 2) return false;
  const [addr, len] = parts;
  const okLen = (max) => len === undefined || (/^\d{1,3}$/.test(len) && Number(len) <= max);
  if (isV4(addr)) return okLen(32);
  if (isV6(addr)) return okLen(128);
  return false;
}

// Rows of allow/deny + CIDR. `value()` → {rules} or {error}.
export function ipRulesEditor(prefix, initial) {
  const list = h('div', { id: prefix + '-ip-rules' });
  let n = 0;
  function addRow(action, cidr) {
    const i = n++;
    const sel = h('select', { id: `${prefix}-ip-action-${i}`, 'aria-label': `Rule ${i + 1} action` },
      h('option', { value: 'allow' }, 'allow'), h('option', { value: 'deny' }, 'deny'));
    sel.value = action || 'allow';
    const input = h('input', { type: 'text', id: `${prefix}-ip-cidr-${i}`, 'aria-label': `Rule ${i + 1} address or CIDR`,
      placeholder: '10.0.0.0/8', autocomplete: 'off', spellcheck: 'false' });
    input.value = cidr || '';
    const row = h('div', { class: 'rule-row', 'data-rule': i }, sel, input,
      h('button', { type: 'button', class: 'secondary', 'aria-label': `Remove rule ${i + 1}`, onclick: () => row.remove() }, 'Remove'));
    list.append(row);
    return input;
  }
  for (const r of initial || []) addRow(r.action, r.cidr);
  const add = h('button', { type: 'button', class: 'secondary', id: prefix + '-ip-add', onclick: () => addRow('allow', '').focus() }, 'Add IP rule');
  const element = h('fieldset', {}, h('legend', {}, 'IP rules'),
    h('p', { class: 'hint' }, 'With any allow rule, only matching addresses may use the key; deny rules win. Empty: any address.'),
    list, add);
  function value() {
    const rules = [];
    for (const row of list.querySelectorAll('.rule-row')) {
      const input = row.querySelector('input');
      const cidr = input.value.trim();
      input.removeAttribute('aria-invalid');
      if (!cidr) continue;
      if (!validCidr(cidr)) {
        input.setAttribute('aria-invalid', 'true');
        input.focus();
        return { error: `IP rule "${cidr}" is not an address or CIDR network (such as 10.0.0.0/8 or 2001:db8::/32).` };
      }
      rules.push({ action: row.querySelector('select').value, cidr });
    }
    return { rules };
  }
  return { element, value };
}

// Rate limit, daily limit, concurrency, credits. `value()` → {limits} or {error}.
export function limitsEditor(prefix, initial, creditsRemaining) {
  const num = (id, v) => {
    const input = h('input', { type: 'number', min: '0', step: '1', id: `${prefix}-${id}`, inputmode: 'numeric' });
    if (v !== undefined && v !== null) input.value = String(v);
    return input;
  };
  const rate = initial.rate || {};
  const rateLimit = num('rate-limit', rate.limit);
  const rateWindow = num('rate-window', rate.window_ms ? rate.window_ms / 1000 : undefined);
  const daily = num('daily', initial.daily);
  const conc = num('concurrency', initial.concurrency ? initial.concurrency.max : undefined);
  const credits = num('credits', creditsRemaining ?? (initial.credits ? initial.credits.initial : undefined));
  const field = (id, label, input) => h('div', {}, h('label', { for: `${prefix}-${id}` }, label), input);
  const element = h('fieldset', {}, h('legend', {}, 'Limits'),
    h('div', { class: 'grid' },
      field('rate-limit', 'Rate limit (calls per window)', rateLimit),
      field('rate-window', 'Rate window (seconds)', rateWindow),
      field('daily', 'Daily limit (calls per UTC day)', daily),
      field('concurrency', 'Concurrent jobs', conc),
      field('credits', 'Credits remaining', credits)),
    h('p', { class: 'hint' }, 'Empty: no limit of that kind.'));
  function value() {
    const read = (input, label) => {
      const t = input.value.trim();
      if (t === '') return null;
      if (!/^\d+$/.test(t)) throw new Error(`${label}: a whole number, 0 or more.`);
      return Number(t);
    };
    try {
      const limits = {};
      const l = read(rateLimit, 'Rate limit');
      const w = read(rateWindow, 'Rate window');
      if ((l === null) !== (w === null)) throw new Error('Rate limit: give both the number of calls and the window.');
      if (l !== null) {
        if (w === 0) throw new Error('Rate window: at least 1 second.');
        limits.rate = { limit: l, window_ms: w * 1000 };
      }
      const d = read(daily, 'Daily limit');
      if (d !== null) limits.daily = d;
      const c = read(conc, 'Concurrent jobs');
      if (c !== null) limits.concurrency = { max: c };
      const cr = read(credits, 'Credits');
      if (cr !== null) limits.credits = { remaining: cr };
      return { limits };
    } catch (e) {
      return { error: e.message };
    }
  }
  return { element, value };
}

function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function describeLimits(l) {
  const out = [];
  if (l.rate) out.push(`${l.rate.limit} calls per ${l.rate.window_ms / 1000} s`);
  if (l.daily !== undefined) out.push(`${l.daily} per day`);
  if (l.concurrency) out.push(`${l.concurrency.max} concurrent`);
  if (l.cooldown_ms !== undefined) out.push(`cooldown ${l.cooldown_ms} ms`);
  if (l.credits) out.push(`credits (initially ${l.credits.initial})`);
  return out.length ? out.join(', ') : 'none';
}

// ---- the page --------------------------------------------------------------

export async function keyPage(view, ctx, id) {
  const me = ctx.me;
  const path = '/v1/api-keys/' + encodeURIComponent(id);
  const k = await api('GET', path);
  let usage = null;
  try {
    usage = await api('GET', path + '/usage');
  } catch (e) {
    usage = null;
  }
  const row = (label, value, vid) => [h('dt', {}, label), h('dd', { id: vid }, value)];
  view.append(
    h('p', {}, h('a', { href: '#/keys' }, '← All keys')),
    h('h1', { id: 'key-title' }, 'Key: ' + (k.name || k.id)),
    h('section', { class: 'card', 'aria-labelledby': 'details-title' },
      h('h2', { id: 'details-title' }, 'Details'),
      h('dl', { class: 'details' },
        row('ID', h('code', {}, k.id)),
        row('Start', h('code', {}, k.start)),
        row('Status', h('span', { class: 'badge status-' + k.status }, k.status), 'key-status'),
        row('Created', when(k.created_at) + (k.created_by ? ' by ' + k.created_by : '')),
        row('Last used', when(k.last_used_at)),
        row('Expires', k.expires_at ? when(k.expires_at) : 'never'),
        k.revoked_at ? row('Revoked', when(k.revoked_at)) : null,
        row('Permissions', k.permissions.length ? k.permissions.join(', ') : 'none'),
        row('IP rules', k.ip_rules.length ? k.ip_rules.map((r) => `${r.action} ${r.cidr}`).join(', ') : 'any address'),
        row('Limits', describeLimits(k.limits)),
        row('Tools', k.tools.length ? k.tools.join(', ') : 'all'),
        k.credits_remaining !== null && k.credits_remaining !== undefined ? row('Credits left', String(k.credits_remaining)) : null,
        k.signing ? row('Signing user', k.signing.user_id) : null,
        usage ? row('Calls', `${usage.valid} valid, ${usage.refused} refused` + (usage.daily_used !== undefined && usage.daily_used !== null ? `, ${usage.daily_used} today` : '')) : null)));

  // Usage chart.
  const rangeSelect = h('select', { id: 'usage-range' },
    Object.entries(RANGES).map(([v, r]) => h('option', { value: v }, r.label)));
  const chartBox = h('div', { id: 'usage-chart' });
  view.append(h('section', { class: 'card', 'aria-labelledby': 'usage-title' },
    h('h2', { id: 'usage-title' }, 'Usage'),
    h('label', { for: 'usage-range' }, 'Period'), rangeSelect,
    chartBox));
  rangeSelect.addEventListener('change', () => usageChart(chartBox, k.id, rangeSelect.value));
  await usageChart(chartBox, k.id, rangeSelect.value);

  if (!me.can.keys_write) {
    view.append(h('p', { class: 'hint', id: 'read-only-note' }, 'Your key may only read keys: editing, rotating, revoking and deleting are not offered.'));
    return;
  }

  // Edit.
  const name = h('input', { type: 'text', id: 'edit-name', autocomplete: 'off' });
  name.value = k.name || '';
  const expires = h('input', { type: 'datetime-local', id: 'edit-expires' });
  expires.value = toLocalInput(k.expires_at);
  const rules = ipRulesEditor('edit', k.ip_rules);
  const limits = limitsEditor('edit', k.limits, k.credits_remaining);
  const editError = h('p', { class: 'error', id: 'edit-error', role: 'alert' });
  const form = h('form', { id: 'edit-form', novalidate: true },
    h('label', { for: 'edit-name' }, 'Name'), name,
    h('label', { for: 'edit-expires' }, 'Expires at (your local time; empty: never)'), expires,
    rules.element, limits.element, editError,
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'edit-save' }, 'Save changes')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    editError.textContent = '';
    if (!name.value.trim()) {
      editError.textContent = 'Name: must not be empty.';
      name.focus();
      return;
    }
    const body = { name: name.value.trim() };
    if (expires.value) {
      const d = new Date(expires.value);
      if (Number.isNaN(d.getTime())) {
        editError.textContent = 'Expires at: not a date and time.';
        return;
      }
      body.expires_at = d.toISOString();
    } else {
      body.expires_at = null;
    }
    const r = rules.value();
    if (r.error) {
      editError.textContent = r.error;
      return;
    }
    body.ip_rules = r.rules;
    const l = limits.value();
    if (l.error) {
      editError.textContent = l.error;
      return;
    }
    body.limits = l.limits;
    try {
      await api('PATCH', path, body);
      announce('Saved.');
      await ctx.reload();
    } catch (e) {
      editError.textContent = 'The server refused: ' + e.message;
    }
  });
  view.append(h('section', { class: 'card', 'aria-labelledby': 'edit-title' }, h('h2', { id: 'edit-title' }, 'Edit'), form));

  // Rotate, revoke, delete.
  const grace = h('input', { type: 'number', id: 'rotate-grace', min: '0', step: '1', value: '0' });
  grace.value = '0';
  const actionError = h('p', { class: 'error', id: 'action-error', role: 'alert' });
  const rotate = h('button', { type: 'button', id: 'rotate-key', disabled: k.status === 'revoked' }, 'Rotate');
  const revoke = h('button', { type: 'button', class: 'danger', id: 'revoke-key', disabled: k.status === 'revoked' }, 'Revoke');
  const del = h('button', { type: 'button', class: 'danger', id: 'delete-key' }, 'Delete');
  rotate.addEventListener('click', async () => {
    actionError.textContent = '';
    const g = grace.value.trim() === '' ? 0 : Number(grace.value);
    if (!Number.isInteger(g) || g < 0) {
      actionError.textContent = 'Grace period: a whole number of seconds.';
      return;
    }
    if (!(await confirmDialog('Rotate this key?', `A new secret is made now; the old one keeps working for ${g} seconds.`, 'Rotate'))) return;
    try {
      const created = await api('POST', path + '/rotate', { grace_seconds: g });
      await secretDialog('Key rotated: ' + created.name, created);
      location.hash = '#/keys/' + encodeURIComponent(created.id);
      if (created.id === k.id) await ctx.reload();
    } catch (e) {
      actionError.textContent = 'The server refused: ' + e.message;
    }
  });
  revoke.addEventListener('click', async () => {
    actionError.textContent = '';
    if (!(await confirmDialog('Revoke this key?', `"${k.name}" stops working at once. This cannot be undone.`, 'Revoke', true))) return;
    try {
      await api('POST', path + '/revoke');
      announce('Key revoked.');
      await ctx.reload();
    } catch (e) {
      actionError.textContent = 'The server refused: ' + e.message;
    }
  });
  del.addEventListener('click', async () => {
    actionError.textContent = '';
    if (!(await confirmDialog('Delete this key?', `"${k.name}" is removed for good; its audit entries stay.`, 'Delete', true))) return;
    try {
      await api('DELETE', path);
      announce('Key deleted.');
      location.hash = '#/keys';
    } catch (e) {
      actionError.textContent = 'The server refused: ' + e.message;
    }
  });
  view.append(h('section', { class: 'card', 'aria-labelledby': 'actions-title' },
    h('h2', { id: 'actions-title' }, 'Rotate, revoke, delete'),
    h('label', { for: 'rotate-grace' }, 'Grace period for the old secret (seconds)'), grace,
    actionError,
    h('div', { class: 'actions' }, rotate, revoke, del)));
}
