// The console's small toolkit: building DOM (text always through
// textContent, never markup from data), calling the admin API with the
// session's CSRF token, and showing the API's errors inline.

export const session = { user: null, superUser: false, csrf: null };

// h('div.card', {onclick: f}, 'text', child, ...): an element. Strings
// become text nodes, so a `<script>` in a description stays text.
export function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag || 'div');
  if (classes.length) el.className = classes.join(' ');
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    // Through the CSSOM: the CSP refuses style attributes written as markup.
    else if (k === 'style') el.style.cssText = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// One call of the admin API. Errors come back as ApiError with the
// API's own message ({"errors":[{"message"}]}).
export async function api(method, path, body) {
  // X-Berth-Console: 401s come back without a Basic challenge, which
  // would make the browser open its own password dialog.
  const headers = { Accept: 'application/json', 'X-Berth-Console': '1' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && session.csrf) headers['X-Berth-CSRF'] = session.csrf;
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' });
  } catch (e) {
    throw new ApiError(0, `this node did not answer (${e.message})`);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = text;
  }
  if (!resp.ok) {
    const msg = (data && data.errors && data.errors[0] && data.errors[0].message) || (data && data.error_message) || `${resp.status} ${resp.statusText}`;
    if (resp.status === 401 && session.user && path !== '/api/v1/session') {
      session.user = null;
      location.hash = '#/signin';
    }
    throw new ApiError(resp.status, msg);
  }
  return data;
}

// A region for inline errors and notices; role=alert so screen readers say it.
export function notice() {
  const el = h('div.notice', { role: 'status', 'aria-live': 'polite' });
  el.show = (msg, kind = 'error') => {
    el.className = `notice ${kind}`;
    el.textContent = msg;
    el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  };
  el.clear = () => {
    el.className = 'notice';
    el.textContent = '';
  };
  return el;
}

// Runs `f`, showing its failure in `where`; returns its result or undefined.
export async function attempt(where, f) {
  where.clear();
  try {
    return await f();
  } catch (e) {
    where.show(e.message || String(e));
    return undefined;
  }
}

// A form: fields [{name, label, type, value, options, required}], a
// submit label and a handler getting the values. Errors show inline.
export function form(fields, submit, onSubmit, opts = {}) {
  const err = notice();
  const inputs = {};
  const rows = fields.map((f) => {
    const id = `f-${Math.random().toString(36).slice(2, 9)}`;
    let input;
    if (f.options) {
      input = h('select', { id, name: f.name }, f.options.map(([v, l]) => h('option', { value: v, selected: v === f.value }, l)));
    } else if (f.type === 'textarea') {
      input = h('textarea', { id, name: f.name, rows: 3 });
      input.value = f.value || '';
    } else if (f.type === 'checkbox') {
      input = h('input', { id, name: f.name, type: 'checkbox' });
      input.checked = !!f.value;
    } else {
      input = h('input', { id, name: f.name, type: f.type || 'text', value: f.value ?? '', required: f.required, placeholder: f.placeholder, autocomplete: f.autocomplete || 'off' });
    }
    inputs[f.name] = input;
    return h('div.field', h('label', { for: id }, f.label), input);
  });
  const button = h('button', { type: 'submit', class: 'primary', 'data-action': opts.action }, submit);
  const el = h('form.form', { 'data-form': opts.action }, rows, h('div.actions', button), err);
  el.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const values = {};
    for (const [k, i] of Object.entries(inputs)) values[k] = i.type === 'checkbox' ? i.checked : i.value;
    button.disabled = true;
    await attempt(err, () => onSubmit(values, err));
    button.disabled = false;
  });
  el.inputs = inputs;
  return el;
}

export function table(headers, rows, empty = 'Nothing here yet.') {
  if (!rows.length) return h('p.empty', empty);
  return h('div.scroll', h('table', h('thead', h('tr', headers.map((x) => h('th', { scope: 'col' }, x)))), h('tbody', rows)));
}

export function tabs(items, active, base) {
  return h('nav.tabs', { 'aria-label': 'Sections' }, items.map(([id, label]) => h('a', { href: `${base}/${id}`, 'aria-current': id === active ? 'page' : null, 'data-tab': id }, label)));
}

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// Seconds since the epoch, or an RFC 3339 string, as local time.
export function when(t) {
  if (t === null || t === undefined || t === '') return '—';
  const d = typeof t === 'number' ? new Date(t * 1000) : new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString();
}

export function copyable(text, label) {
  const pre = h('pre.copy', { tabindex: 0, 'data-copy': label }, text);
  const status = h('span.copied', { 'aria-live': 'polite' });
  const btn = h('button', {
    type: 'button',
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(text);
        status.textContent = 'Copied';
      } catch (_) {
        const r = document.createRange();
        r.selectNodeContents(pre);
        const s = getSelection();
        s.removeAllRanges();
        s.addRange(r);
        status.textContent = 'Selected: press Ctrl+C';
      }
    },
  }, `Copy ${label}`);
  return h('div.copyblock', pre, h('div', btn, ' ', status));
}

export function title(text, ...rest) {
  document.title = `${text} · berth`;
  return h('header.pagehead', h('h1', text), rest);
}

export function confirmButton(label, question, f, where) {
  return h('button.danger', { type: 'button', onclick: async () => { if (confirm(question)) await attempt(where, f); } }, label);
}
