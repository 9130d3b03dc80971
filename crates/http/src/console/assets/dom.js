// Small DOM helpers: elements are built node by node, never from HTML
// strings, so no value from the server is ever parsed as markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString();
}

export function announce(text) {
  const s = document.getElementById('status');
  if (s) s.textContent = text;
}

// A modal dialog; resolves with the value of the button that closed it.
export function modal(title, body, buttons, id) {
  return new Promise((resolve) => {
    const titleId = (id || 'dialog') + '-title';
    const d = h('dialog', { id: id || 'dialog', 'aria-labelledby': titleId });
    const row = h('div', { class: 'actions' });
    for (const b of buttons) {
      row.append(h('button', {
        type: 'button', class: b.class || '', id: b.id,
        onclick: () => { d.close(b.value); },
      }, b.label));
    }
    d.append(h('h2', { id: titleId }, title), body, row);
    d.addEventListener('close', () => {
      d.remove();
      resolve(d.returnValue || 'cancel');
    });
    document.body.append(d);
    d.showModal();
  });
}

export function confirmDialog(title, text, action, danger) {
  return modal(title, h('p', {}, text), [
    { label: 'Cancel', value: 'cancel', class: 'secondary', id: 'confirm-cancel' },
    { label: action, value: 'ok', class: danger ? 'danger' : '', id: 'confirm-ok' },
  ], 'confirm-dialog').then((v) => v === 'ok');
}

// Shows a secret once, with a copy button. Nothing keeps it: once the
// dialog closes (or the page reloads) it is gone.
export function secretDialog(title, created) {
  const rows = [];
  const field = (label, id, value) => {
    const input = h('input', { type: 'text', id, readonly: true, value, 'aria-label': label, spellcheck: 'false' });
    input.value = value;
    const status = h('span', { class: 'hint', role: 'status', id: id + '-copied' });
    const copy = h('button', {
      type: 'button', class: 'secondary', id: id + '-copy',
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(input.value);
        } catch (e) {
          input.select();
          document.execCommand('copy');
        }
        status.textContent = 'Copied.';
      },
    }, 'Copy');
    rows.push(h('label', { for: id }, label), h('div', { class: 'secret-box' }, input, copy), status);
  };
  field('Secret key', 'secret-value', created.secret);
  if (created.api_secret) field('API secret (for signed requests)', 'api-secret-value', created.api_secret);
  const body = h('div', {},
    h('p', { class: 'warning', role: 'alert' },
      'Copy it now: this is the only time it is shown. keyward stores only a hash and cannot show it again.'),
    rows);
  return modal(title, body, [{ label: 'I have copied it — close', value: 'done', id: 'secret-close' }], 'secret-dialog');
}
