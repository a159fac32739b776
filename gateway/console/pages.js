// The console's pages over the admin API: repositories (information,
// tags, security scans, usage logs, settings), organizations (teams,
// robots, OAuth applications and their tokens, quotas, policies, logs)
// and the account (tokens, password). Every call here is one the CLI
// makes too.

import { h, api, attempt, notice, form, table, tabs, bytes, when, copyable, title, confirmButton, session } from './ui.js';

const enc = encodeURIComponent;
const repoPath = (ns, name) => `/api/v1/repository/${enc(ns)}/${enc(name)}`;
const host = () => location.host;

// ---------- repositories ----------

export async function reposPage(main) {
  const err = notice();
  const search = h('input', { type: 'search', id: 'repo-search', placeholder: 'Search repositories', 'aria-label': 'Search repositories' });
  const list = h('div');
  main.append(title('Repositories'), err);
  let repos = [];
  const render = () => {
    const q = search.value.trim().toLowerCase();
    const rows = repos
      .filter((r) => !q || `${r.namespace}/${r.name} ${r.description}`.toLowerCase().includes(q))
      .map((r) =>
        h('tr', { 'data-repo': `${r.namespace}/${r.name}` },
          h('td', h('a', { href: `#/repository/${r.namespace}/${r.name}` }, `${r.namespace}/${r.name}`)),
          h('td', r.is_public ? 'public' : 'private'),
          h('td', r.state),
          h('td', String(r.tags.length)),
          h('td.desc', r.description),
          h('td', r.last_push ? when(r.last_push) : '—')));
    list.replaceChildren(table(['Repository', 'Visibility', 'State', 'Tags', 'Description', 'Last push'], rows, 'No repositories yet.'));
  };
  search.addEventListener('input', render);
  const orgs = (await attempt(err, () => api('GET', '/api/v1/user/')))?.organizations || [];
  const create = form(
    [
      { name: 'namespace', label: 'Namespace', options: [session.user, ...orgs].map((o) => [o, o]), value: orgs[0] },
      { name: 'repository', label: 'Name', required: true },
      { name: 'visibility', label: 'Visibility', options: [['private', 'private'], ['public', 'public']] },
      { name: 'description', label: 'Description', type: 'textarea' },
    ],
    'Create repository',
    async (v) => {
      await api('POST', '/api/v1/repository', v);
      location.hash = `#/repository/${v.namespace}/${v.repository}`;
    },
    { action: 'create-repo' });
  main.append(h('div.toolbar', search), list, h('details.panel', h('summary', 'New repository'), create));
  const data = await attempt(err, () => api('GET', '/api/v1/repository'));
  repos = data ? data.repositories : [];
  // Last push: the newest live tag's last modification.
  await Promise.all(repos.map(async (r) => {
    try {
      const t = await api('GET', `${repoPath(r.namespace, r.name)}/tag/?onlyActiveTags=true&limit=1`);
      r.last_push = t.tags.length ? Math.max(...t.tags.map((x) => x.last_modified)) : null;
    } catch (_) { /* shown as unknown */ }
  }));
  render();
}

export async function repoPage(main, ns, name, tab = 'info', digest) {
  const err = notice();
  main.append(err);
  const repo = await attempt(err, () => api('GET', repoPath(ns, name)));
  if (!repo) return;
  const base = `#/repository/${ns}/${name}`;
  const items = [['info', 'Information'], ['tags', 'Tags'], ['security', 'Security'], ['logs', 'Usage logs']];
  if (repo.can_admin) items.push(['settings', 'Settings']);
  main.append(title(`${ns}/${name}`, h('span.badge', repo.is_public ? 'public' : 'private'), h('span.badge', repo.state)), tabs(items, tab, base));
  const body = h('section.tabbody');
  main.append(body);
  if (tab === 'tags') return tagsTab(body, ns, name, repo);
  if (tab === 'security') return securityTab(body, ns, name, digest);
  if (tab === 'logs') return logsTab(body, `${repoPath(ns, name)}/logs`);
  if (tab === 'settings' && repo.can_admin) return settingsTab(body, ns, name, repo);
  body.append(
    h('h2', 'Description'),
    h('p.desc', { 'data-field': 'description' }, repo.description || 'No description.'),
    h('h2', 'Pull this repository'),
    copyable(`docker pull ${host()}/${ns}/${name}:latest`, 'docker pull command'),
    copyable(`podman pull ${host()}/${ns}/${name}:latest`, 'podman pull command'),
    h('p', 'Tags: ', repo.tags.length ? repo.tags.join(', ') : 'none yet'));
}

function expiryForm(ns, name, tag, done) {
  const err = notice();
  const input = h('input', { type: 'datetime-local', 'aria-label': `Expiration of ${tag.name}`, 'data-expiry-input': tag.name });
  if (tag.expiration) input.value = new Date(tag.expiration * 1000 - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  const set = async (expiration) => {
    await attempt(err, async () => {
      await api('PUT', `${repoPath(ns, name)}/tag/${enc(tag.name)}`, { expiration });
      done();
    });
  };
  return h('div.inline', input,
    h('button', { type: 'button', 'data-action': 'set-expiration', onclick: () => {
      if (!input.value) return err.show('choose a date and time');
      set(Math.floor(new Date(input.value).getTime() / 1000));
    } }, 'Set'),
    h('button', { type: 'button', onclick: () => set(null) }, 'Never'),
    err);
}

// Where each blob of a tag's image is held: the placement records every
// node has, with the holders' regions (superusers and repository admins).
async function togglePlacement(button, box, ns, name, tag) {
  if (box.childElementCount) {
    box.replaceChildren();
    button.setAttribute('aria-expanded', 'false');
    return;
  }
  const err = notice();
  box.replaceChildren(err);
  button.setAttribute('aria-expanded', 'true');
  const p = await attempt(err, () => api('GET', `${repoPath(ns, name)}/manifest/${enc(tag.manifest_digest)}/placement`));
  if (!p) return;
  box.append(table(['Blob', 'Kind', 'Size', 'Held by'], p.blobs.map((b) =>
    h('tr', { 'data-blob': b.digest },
      h('td', h('code', { title: b.digest }, b.digest.slice(7, 19))),
      h('td', b.kind),
      h('td', bytes(b.size)),
      h('td', { 'data-field': 'holders', 'data-count': String(b.holders.length) }, b.holders.length ? b.holders.map((x) => `node ${x.node} (${x.region || 'unknown region'})`).join(', ') : 'no node yet'))),
  'This manifest references no blobs.'));
}

async function tagsTab(body, ns, name, repo) {
  const err = notice();
  const list = h('div');
  body.append(err, list);
  const load = async () => {
    const data = await attempt(err, () => api('GET', `${repoPath(ns, name)}/tag/?limit=100`));
    if (!data) return;
    // A live tag with an expiration has its end already: the expiration.
    const now = Date.now() / 1000;
    const ended = (t) => t.end_ts !== null && t.end_ts !== undefined && t.end_ts <= now;
    const live = data.tags.filter((t) => !ended(t));
    const rows = live.map((t) => {
      const editor = h('div.editor');
      const placement = h('div.placement');
      return h('tr', { 'data-tag': t.name },
        h('th', { scope: 'row' }, t.name),
        h('td', h('code', { 'data-field': 'digest', title: t.manifest_digest }, t.manifest_digest)),
        h('td', { 'data-field': 'size' }, bytes(t.size)),
        h('td', when(t.last_modified)),
        h('td', { 'data-field': 'expires' }, t.expiration ? when(t.expiration) : 'Never',
          repo.can_write ? h('div', h('button.link', { type: 'button', 'data-action': 'change-expiration', onclick: () => editor.replaceChildren(expiryForm(ns, name, t, load)) }, 'Change expiration'), editor) : null),
        h('td', t.immutable ? 'immutable' : 'mutable',
          repo.can_write ? h('button.link', { type: 'button', onclick: () => attempt(err, async () => { await api('PUT', `${repoPath(ns, name)}/tag/${enc(t.name)}`, { immutable: !t.immutable }); load(); }) }, t.immutable ? 'Unlock' : 'Lock') : null),
        h('td', { 'data-field': 'security', 'data-status': t.security ? t.security.status : 'none' },
          h('a', { href: `#/repository/${ns}/${name}/security/${t.manifest_digest}`, 'aria-label': `Security scan of ${t.name}: ${securitySummary(t.security)}` }, securitySummary(t.security))),
        h('td', { 'data-field': 'placement' }, h('button.link', { type: 'button', 'data-action': 'show-placement', 'aria-expanded': 'false', onclick: (e) => togglePlacement(e.currentTarget, placement, ns, name, t) }, 'Where held'), placement),
        h('td', repo.can_write ? h('button.danger', { type: 'button', 'data-action': 'delete-tag', 'aria-label': `Delete tag ${t.name}`, onclick: () => {
          if (!confirm(`Delete tag ${t.name}? It stays in the history and can be restored.`)) return;
          attempt(err, async () => {
            await api('DELETE', `${repoPath(ns, name)}/tag/${enc(t.name)}`);
            await load();
            err.show(`Deleted tag ${t.name}; restore it from the history below.`, 'ok');
          });
        } }, 'Delete') : null));
    });
    const history = data.tags.filter(ended).map((t) =>
      h('tr', { 'data-history-tag': t.name }, h('td', t.name), h('td', h('code', t.manifest_digest)), h('td', when(t.start_ts)), h('td', when(t.end_ts)),
        h('td', repo.can_write ? h('button', { type: 'button', 'data-action': 'restore-tag', onclick: () => attempt(err, async () => { await api('POST', `${repoPath(ns, name)}/tag/${enc(t.name)}/restore`, { manifest_digest: t.manifest_digest }); load(); }) }, 'Restore') : null)));
    list.replaceChildren(
      table(['Tag', 'Digest', 'Size', 'Last modified', 'Expires', 'Immutability', 'Security', 'Blobs', ''], rows, 'No tags: push an image to this repository.'),
      h('h2', 'History'),
      table(['Tag', 'Digest', 'From', 'Until', ''], history, 'No earlier tags.'));
  };
  await load();
}

// Quay's severities, worst first.
const SEVERITIES = ['Critical', 'High', 'Medium', 'Low', 'Negligible', 'Unknown'];

// A tag's scan in a few words: its status, or its vulnerabilities by severity.
function securitySummary(s) {
  if (!s) return 'not scanned';
  if (s.status !== 'scanned') return s.status;
  const parts = SEVERITIES.filter((v) => s.counts[v]).map((v) => `${s.counts[v]} ${v}`);
  return parts.length ? parts.join(', ') : 'no known vulnerabilities';
}

// Only web links from the advisories become links; anything else stays text.
function advisoryLink(link, label) {
  const url = String(link || '').split(/\s+/).find((u) => /^https?:\/\//i.test(u));
  return url ? h('a', { href: url, rel: 'noopener noreferrer', target: '_blank' }, label) : label;
}

const shortDigest = (d) => (d ? h('code', { title: d }, String(d).replace(/^sha256:/, '').slice(0, 12)) : '—');

// The scan of one manifest, as Quay's security API reports it: the
// status, the packages found (and the layer that added each), and the
// vulnerabilities grouped by severity with the versions that fix them.
// A queued scan is asked again every 2 s while the tab is open.
async function securityTab(body, ns, name, digest) {
  const err = notice();
  const pick = h('select', { id: 'security-manifest', 'data-field': 'security-manifest' });
  const report = h('div', { 'aria-live': 'polite' });
  body.append(err, h('div.toolbar', h('label', { for: 'security-manifest' }, 'Manifest'), pick), report);
  const tags = await attempt(err, () => api('GET', `${repoPath(ns, name)}/tag/?onlyActiveTags=true&limit=100`));
  if (!tags) return;
  const digests = [];
  for (const t of tags.tags) if (!digests.some(([d]) => d === t.manifest_digest)) digests.push([t.manifest_digest, []]);
  for (const t of tags.tags) digests.find(([d]) => d === t.manifest_digest)[1].push(t.name);
  if (digest && !digests.some(([d]) => d === digest)) digests.unshift([digest, []]);
  if (!digests.length) {
    report.append(h('p.empty', 'No tags: push an image to this repository, then read its scan here.'));
    return;
  }
  const chosen = digest || digests[0][0];
  pick.append(...digests.map(([d, names]) => h('option', { value: d, selected: d === chosen }, `${names.length ? names.join(', ') : 'untagged'} — ${d.slice(0, 19)}…`)));
  pick.addEventListener('change', () => { location.hash = `#/repository/${ns}/${name}/security/${pick.value}`; });
  const load = async () => {
    if (!document.body.contains(report)) return; // left the page
    const s = await attempt(err, () => api('GET', `${repoPath(ns, name)}/manifest/${enc(chosen)}/security?vulnerabilities=true`));
    if (!s) return;
    renderSecurity(report, chosen, s, load);
    if (s.status === 'queued') setTimeout(load, 2000);
  };
  await load();
}

function renderSecurity(view, digest, s, reload) {
  const features = (s.data && s.data.Layer && s.data.Layer.Features) || [];
  const vulns = features.flatMap((f) => (f.Vulnerabilities || []).map((v) => ({ ...v, pkg: f.Name, installed: f.Version })));
  const explain = {
    queued: 'Waiting for a node to scan this manifest; this page asks again every 2 seconds.',
    scanned: features.length ? `${features.length} packages, ${vulns.length} vulnerabilities.` : 'No packages found: the image has no package database berth can read.',
    unsupported: 'This manifest cannot be scanned (an index, or a format the scanner does not read).',
    failed: 'The scan failed.',
  }[s.status] || '';
  const counts = SEVERITIES.map((sev) => [sev, vulns.filter((v) => v.Severity === sev).length]).filter(([, n]) => n);
  view.replaceChildren(
    h('div.panel',
      h('p', 'Manifest ', h('code', { 'data-field': 'scan-digest' }, digest)),
      h('p', 'Status: ', h('strong', { 'data-field': 'scan-status', 'data-status': s.status }, s.status), ' ', h('button.link', { type: 'button', 'data-action': 'refresh-scan', onclick: reload }, 'Refresh')),
      h('p', { 'data-field': 'scan-summary' }, explain),
      s.reason ? h('p', { 'data-field': 'scan-reason' }, `Reason: ${s.reason}`) : null,
      counts.length ? h('ul.severities', counts.map(([sev, n]) => h('li', h('a', { href: `#sev-${sev}`, class: `sev ${sev.toLowerCase()}`, onclick: (e) => { e.preventDefault(); document.getElementById(`sev-${sev}`).scrollIntoView(); } }, `${n} ${sev}`)))) : null),
    s.data ? h('div', { 'data-field': 'scan-report' },
      h('h2', 'Vulnerabilities'),
      vulns.length ? SEVERITIES.filter((sev) => vulns.some((v) => v.Severity === sev)).map((sev) => {
        const list = vulns.filter((v) => v.Severity === sev);
        return h('section.severity', { 'data-severity': sev, id: `sev-${sev}` },
          h('h3', h('span', { class: `sev ${sev.toLowerCase()}` }, sev), ` (${list.length})`),
          table(['Advisory', 'Package', 'Installed', 'Fixed in', 'Description'], list.map((v) =>
            h('tr', { 'data-vulnerability': v.Name },
              h('td', advisoryLink(v.Link, v.Name)), h('td', v.pkg), h('td', v.installed),
              h('td', { 'data-field': 'fixed-by' }, v.FixedBy || 'no fix yet'), h('td.desc', v.Description || '')))));
      }) : h('p.empty', { 'data-field': 'no-vulnerabilities' }, 'No known vulnerabilities.'),
      h('h2', 'Packages'),
      table(['Package', 'Version', 'Format', 'Added by layer', 'Vulnerabilities'], features.map((f) =>
        h('tr', { 'data-package': f.Name },
          h('td', f.Name), h('td', f.Version), h('td', f.VersionFormat || ''), h('td', shortDigest(f.AddedBy)), h('td', String((f.CVEIds || []).length)))),
      'No packages found.')) : '');
}

async function logsTab(body, path) {
  const err = notice();
  const chart = h('div.chart', { 'aria-label': 'Pushes and pulls per day' });
  const list = h('div');
  const kind = h('select', { 'aria-label': 'Kind' }, ['', 'push_repo', 'pull_repo', 'delete_tag', 'create_repo', 'change_tag_expiration'].map((k) => h('option', { value: k }, k || 'all kinds')));
  const since = h('select', { 'aria-label': 'Period' }, [['1', 'last day'], ['7', 'last week'], ['30', 'last 30 days']].map(([v, l]) => h('option', { value: v, selected: v === '7' }, l)));
  const load = async () => {
    const start = new Date(Date.now() - Number(since.value) * 86400000).toISOString();
    let q = `?starttime=${enc(start)}`;
    if (kind.value) q += `&kind=${enc(kind.value)}`;
    const page = await attempt(err, () => api('GET', path + q));
    if (!page) return;
    const days = {};
    for (const l of page.logs) {
      const d = l.datetime.slice(0, 10);
      days[d] = days[d] || { push: 0, pull: 0 };
      if (l.kind === 'push_repo') days[d].push++;
      if (l.kind === 'pull_repo') days[d].pull++;
    }
    const max = Math.max(1, ...Object.values(days).map((d) => Math.max(d.push, d.pull)));
    chart.replaceChildren(...Object.keys(days).sort().map((d) =>
      h('div.day', h('div.bars', h('div.bar.push', { style: `height:${(days[d].push / max) * 100}%`, title: `${days[d].push} pushes` }), h('div.bar.pull', { style: `height:${(days[d].pull / max) * 100}%`, title: `${days[d].pull} pulls` })), h('span', d.slice(5)), h('span.sr', `${days[d].push} pushes, ${days[d].pull} pulls`))));
    list.replaceChildren(table(['When', 'Kind', 'Performer', 'Repository', 'Node', 'Region', 'IP', 'Details'], page.logs.map((l) =>
      h('tr', { 'data-log': l.kind },
        h('td', when(l.datetime)), h('td', l.kind), h('td', { 'data-field': 'performer' }, `${l.performer.name} (${l.performer.kind})`),
        h('td', l.repository || ''), h('td', { 'data-field': 'node' }, String(l.node)), h('td', { 'data-field': 'region' }, l.region), h('td', l.ip || ''),
        h('td.desc', Object.entries(l.metadata).map(([k, v]) => `${k}=${v}`).join(' ')))), 'No usage in this period.'));
  };
  kind.addEventListener('change', load);
  since.addEventListener('change', load);
  body.append(err, h('div.toolbar', kind, since, h('span.legend', h('i.push'), 'pushes ', h('i.pull'), 'pulls')), chart, list);
  await load();
}

async function settingsTab(body, ns, name, repo) {
  const p = repoPath(ns, name);
  const err = notice();
  body.append(err);
  body.append(h('h2', 'Description and visibility'),
    form([{ name: 'description', label: 'Description', type: 'textarea', value: repo.description }], 'Save description',
      async (v, e) => { await api('PUT', p, { description: v.description }); e.show('Saved.', 'ok'); }, { action: 'save-description' }),
    form([{ name: 'visibility', label: 'Visibility', options: [['private', 'private'], ['public', 'public']], value: repo.is_public ? 'public' : 'private' }], 'Change visibility',
      async (v, e) => { await api('POST', `${p}/changevisibility`, v); e.show('Saved.', 'ok'); }),
    form([{ name: 'state', label: 'State', options: [['NORMAL', 'NORMAL'], ['READ_ONLY', 'READ_ONLY'], ['MIRROR', 'MIRROR']], value: repo.state }], 'Change state',
      async (v, e) => { await api('PUT', `${p}/changestate`, v); e.show('Saved.', 'ok'); }));

  // Permissions: users and robots, then teams.
  const perms = h('div');
  const loadPerms = async () => {
    const [u, t] = await Promise.all([api('GET', `${p}/permissions/user/`), api('GET', `${p}/permissions/team/`)]);
    const rows = [...Object.values(u.permissions).map((x) => ['user', x]), ...Object.values(t.permissions).map((x) => ['team', x])].map(([k, x]) =>
      h('tr', { 'data-grantee': x.name }, h('td', x.name), h('td', x.is_robot ? 'robot' : k), h('td', x.role),
        h('td', h('button', { type: 'button', onclick: () => attempt(err, async () => { await api('DELETE', `${p}/permissions/${k}/${enc(x.name)}`); loadPerms(); }) }, 'Remove'))));
    perms.replaceChildren(table(['Account', 'Kind', 'Role', ''], rows, 'Only the namespace\u2019s administrators.'));
  };
  body.append(h('h2', 'Permissions'), perms,
    form([
      { name: 'kind', label: 'Kind', options: [['user', 'user or robot'], ['team', 'team']] },
      { name: 'name', label: 'Name (robots: org+name)', required: true },
      { name: 'role', label: 'Role', options: [['read', 'read'], ['write', 'write'], ['admin', 'admin']] },
    ], 'Grant', async (v) => { await api('PUT', `${p}/permissions/${v.kind}/${enc(v.name)}`, { role: v.role }); await loadPerms(); }, { action: 'grant' }));
  await attempt(err, loadPerms);

  // Notifications.
  const notes = h('div');
  const loadNotes = async () => {
    const n = await api('GET', `${p}/notification/`);
    notes.replaceChildren(table(['Title', 'Event', 'Method', 'Target', 'Failures', ''], n.notifications.map((x) => {
      const st = notice();
      return h('tr', { 'data-notification': x.title },
        h('td', x.title), h('td', x.event), h('td', x.method), h('td.desc', x.config.url || x.config.email || ''), h('td', String(x.number_of_failures)),
        h('td', h('button', { type: 'button', 'data-action': 'test-notification', onclick: () => attempt(st, async () => { await api('POST', `${p}/notification/${x.uuid}/test`); st.show('Test sent.', 'ok'); }) }, 'Test'),
          ' ', h('button', { type: 'button', onclick: () => attempt(st, async () => { await api('DELETE', `${p}/notification/${x.uuid}`); loadNotes(); }) }, 'Delete'), st));
    }), 'No notifications.'));
  };
  const secret = h('div');
  body.append(h('h2', 'Notifications'), notes,
    form([
      { name: 'title', label: 'Title', required: true },
      { name: 'event', label: 'When', options: [['repo_push', 'a push'], ['repo_image_expiry', 'an image is about to expire']] },
      { name: 'method', label: 'Send', options: [['webhook', 'webhook'], ['slack', 'Slack'], ['cloudevents', 'CloudEvents'], ['email', 'e-mail']] },
      { name: 'target', label: 'URL or e-mail address', required: true },
    ], 'Add notification', async (v) => {
      const config = v.method === 'email' ? { email: v.target } : { url: v.target };
      const eventConfig = v.event === 'repo_image_expiry' ? { days: 7 } : {};
      const made = await api('POST', `${p}/notification/`, { title: v.title, event: v.event, method: v.method, config, eventConfig });
      if (made.signing_secret) secret.replaceChildren(h('p', 'Signing secret (shown once):'), copyable(made.signing_secret, 'signing secret'));
      await loadNotes();
    }, { action: 'add-notification' }), secret);
  await attempt(err, loadNotes);

  // Mirroring.
  const mirror = h('div');
  body.append(h('h2', 'Mirroring'), mirror);
  const m = await api('GET', `${p}/mirror`).catch(() => null);
  mirror.append(
    m ? h('p', { 'data-field': 'mirror-status' }, `Status: ${m.sync_status}`, m.last_sync_message ? ` (${m.last_sync_message})` : '', m.syncing_node ? `, syncing on node ${m.syncing_node}` : '') : h('p', 'Not a mirror. Set the state to MIRROR, then configure it here.'),
    form([
      { name: 'external_reference', label: 'Upstream repository (registry/namespace/name)', value: m?.external_reference, required: true },
      { name: 'tags', label: 'Tags (comma-separated globs)', value: m ? m.root_rule.rule_value.join(',') : '*' },
      { name: 'robot_username', label: 'Robot', value: m?.robot_username, required: true },
      { name: 'sync_interval', label: 'Sync interval (s)', type: 'number', value: m?.sync_interval ?? 3600 },
      { name: 'username', label: 'Upstream user' , value: m?.external_registry_username || '' },
      { name: 'password', label: 'Upstream password (never shown)', type: 'password', autocomplete: 'new-password' },
      { name: 'verify_tls', label: 'Verify TLS', type: 'checkbox', value: m ? m.external_registry_config.verify_tls !== false : true },
      { name: 'is_enabled', label: 'Enabled', type: 'checkbox', value: m ? m.is_enabled : true },
    ], m ? 'Save mirror' : 'Create mirror', async (v, e) => {
      const req = {
        external_reference: v.external_reference, robot_username: v.robot_username, sync_interval: Number(v.sync_interval), is_enabled: v.is_enabled,
        root_rule: { rule_kind: 'tag_glob_csv', rule_value: v.tags.split(',').map((s) => s.trim()).filter(Boolean) },
        external_registry_config: { verify_tls: v.verify_tls },
      };
      if (v.username) req.external_registry_username = v.username;
      if (v.password) req.external_registry_password = v.password;
      if (!m) req.sync_start_date = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
      await api(m ? 'PUT' : 'POST', `${p}/mirror`, req);
      e.show('Saved.', 'ok');
    }),
    m ? h('div.actions', h('button', { type: 'button', onclick: () => attempt(err, () => api('POST', `${p}/mirror/sync-now`)) }, 'Sync now'), ' ', h('button', { type: 'button', onclick: () => attempt(err, () => api('POST', `${p}/mirror/sync-cancel`)) }, 'Cancel sync')) : null);

  body.append(h('h2', 'Delete'), confirmButton('Delete repository', `Delete ${ns}/${name} and all its tags?`, async () => { await api('DELETE', p); location.hash = '#/repositories'; }, err));
}

// ---------- organizations ----------

export async function orgsPage(main) {
  const err = notice();
  main.append(title('Organizations'), err);
  const me = await attempt(err, () => api('GET', '/api/v1/user/'));
  const names = me ? me.organizations : [];
  main.append(table(['Organization'], names.map((o) => h('tr', h('td', h('a', { href: `#/organization/${o}` }, o)))), 'You belong to no organization.'),
    h('h2', 'New organization'),
    form([{ name: 'name', label: 'Name', required: true }, { name: 'email', label: 'E-mail (optional)', type: 'email' }], 'Create organization', async (v) => {
      await api('POST', '/api/v1/organization/', { name: v.name, email: v.email || null });
      location.hash = `#/organization/${v.name}`;
    }, { action: 'create-org' }));
}

export async function orgPage(main, org, tab = 'robots') {
  const err = notice();
  main.append(err);
  const o = await attempt(err, () => api('GET', `/api/v1/organization/${enc(org)}`));
  if (!o) return;
  const base = `#/organization/${org}`;
  const items = [['robots', 'Robot accounts'], ['teams', 'Teams'], ['quota', 'Quota'], ['policies', 'Policies'], ['logs', 'Usage logs']];
  if (o.is_admin) items.splice(2, 0, ['applications', 'OAuth applications']);
  main.append(title(org), tabs(items, tab, base));
  const body = h('section.tabbody');
  main.append(body);
  if (tab === 'applications' && o.is_admin) return applicationsTab(body, org);
  if (tab === 'teams') return teamsTab(body, org, o);
  if (tab === 'quota') return quotaTab(body, org);
  if (tab === 'policies') return policiesTab(body, org);
  if (tab === 'logs') return logsTab(body, `/api/v1/organization/${enc(org)}/logs`);
  return robotsTab(body, org);
}

export function robotCredentials(name, token) {
  const server = host();
  const auth = btoa(`${name}:${token}`);
  const dockerconfig = btoa(JSON.stringify({ auths: { [server]: { auth } } }));
  const secretName = name.replace('+', '-').replace(/[^a-z0-9-]/g, '-');
  return h('div.credentials', { 'data-credentials': name },
    h('p', 'Shown once: copy them now.'),
    copyable(`docker login ${server} -u '${name}' -p '${token}'`, 'docker login'),
    copyable(`apiVersion: v1\nkind: Secret\nmetadata:\n  name: ${secretName}-pull-secret\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: ${dockerconfig}\n`, 'Kubernetes pull secret'));
}

async function robotsTab(body, org) {
  const err = notice();
  const list = h('div');
  const shown = h('div');
  const repos = ((await api('GET', `/api/v1/repository?namespace=${enc(org)}`).catch(() => null))?.repositories) || [];
  const load = async () => {
    const r = await api('GET', `/api/v1/organization/${enc(org)}/robots`);
    list.replaceChildren(table(['Robot', 'Description', 'Created', ''], r.robots.map((x) =>
      h('tr', { 'data-robot': x.name }, h('td', x.name), h('td.desc', x.description), h('td', when(x.created)),
        h('td',
          h('button', { type: 'button', onclick: () => attempt(err, async () => { const v = await api('POST', `/api/v1/organization/${enc(org)}/robots/${enc(x.name.split('+')[1])}/regenerate`); shown.replaceChildren(robotCredentials(v.name, v.token)); }) }, 'New secret'),
          ' ', confirmButton('Delete', `Delete robot ${x.name}?`, async () => { await api('DELETE', `/api/v1/organization/${enc(org)}/robots/${enc(x.name.split('+')[1])}`); load(); }, err)))), 'No robot accounts.'));
  };
  body.append(err, list, shown,
    h('h2', 'New robot account'),
    form([
      { name: 'short', label: `Name (${org}+…)`, required: true },
      { name: 'description', label: 'Description', type: 'textarea' },
      { name: 'repo', label: 'Give access to', options: [['', '(no repository yet)'], ...repos.map((r) => [r.name, `${org}/${r.name}`])] },
      { name: 'role', label: 'Role', options: [['read', 'read'], ['write', 'write'], ['admin', 'admin']] },
    ], 'Create robot', async (v) => {
      const made = await api('PUT', `/api/v1/organization/${enc(org)}/robots/${enc(v.short)}`, { description: v.description });
      if (v.repo) await api('PUT', `${repoPath(org, v.repo)}/permissions/user/${enc(made.name)}`, { role: v.role });
      shown.replaceChildren(robotCredentials(made.name, made.token));
      await load();
    }, { action: 'create-robot' }));
  await attempt(err, load);
}

// An application's client secret, shown once: at creation and at a reset
// (berth keeps only its hash).
function clientSecret(app) {
  return h('div.credentials', { 'data-client-secret': app.client_id },
    h('p', `Application ${app.name}: its client secret is shown once, copy it now. A reset makes a new one.`),
    h('h3', 'Client ID'), copyable(app.client_id, 'client id'),
    h('h3', 'Client secret'), copyable(app.client_secret, 'client secret'));
}

// An application's fields, changed with Quay's PUT; the client id and
// secret stay (a reset makes a new secret), and so does public_client.
function editApplication(base, a, done) {
  const f = form([
    { name: 'name', label: 'Name', required: true, value: a.name },
    { name: 'redirect_uri', label: 'Redirect URI', type: 'url', required: true, value: a.redirect_uri },
    { name: 'application_uri', label: 'Application URI', type: 'url', value: a.application_uri },
    { name: 'avatar_email', label: 'Avatar e-mail', type: 'email', value: a.avatar_email || '' },
    { name: 'description', label: 'Description', type: 'textarea', value: a.description },
  ], 'Save application', async (v) => {
    // Every field is sent: an emptied one is cleared, and the API checks each.
    const saved = await api('PUT', `${base}/${enc(a.client_id)}`, v);
    await done(saved);
  }, { action: 'edit-application' });
  return h('div.panel', { 'data-editing': a.client_id }, h('h2', `Edit ${a.name}`), f);
}

// The tokens an application holds (one per user who authorized it, or
// generated for themselves), each revocable: the token stops working at once.
async function applicationTokens(view, base, a, err) {
  const path = `${base}/${enc(a.client_id)}/tokens`;
  const t = await api('GET', path);
  view.replaceChildren(h('div.panel', { 'data-tokens-of': a.client_id },
    h('h2', `Tokens held by ${a.name}`),
    table(['Token', 'User', 'Scopes', 'Created', 'Expires', ''], t.tokens.map((x) =>
      h('tr', { 'data-token': x.uuid },
        h('td', h('code', x.uuid)), h('td', { 'data-field': 'user' }, x.user), h('td', { 'data-field': 'scopes' }, x.scopes.join(' ')),
        h('td', when(x.created)), h('td', x.expiration ? when(x.expiration) : 'never'),
        h('td', h('button.danger', { type: 'button', 'data-action': 'revoke-token', 'aria-label': `Revoke the token of ${x.user}`, onclick: () => {
          if (!confirm(`Revoke the token ${a.name} holds for ${x.user}? It stops working at once.`)) return;
          attempt(err, async () => {
            await api('DELETE', `${path}/${enc(x.uuid)}`);
            await applicationTokens(view, base, a, err);
            err.show(`Revoked the token of ${x.user}.`, 'ok');
          });
        } }, 'Revoke')))), 'This application holds no tokens.')));
}

// OAuth applications (organization administrators): Quay's list, create,
// edit, reset secret, delete and the tokens held, on
// `/api/v1/organization/{org}/applications`.
async function applicationsTab(body, org) {
  const base = `/api/v1/organization/${enc(org)}/applications`;
  const err = notice();
  const list = h('div');
  const shown = h('div');
  const detail = h('div');
  const load = async () => {
    const r = await api('GET', base);
    list.replaceChildren(table(['Application', 'Client ID', 'Redirect URI', 'Application URI', 'Description', ''], r.applications.map((a) =>
      h('tr', { 'data-application': a.client_id },
        h('th', { scope: 'row' }, a.name, a.public_client ? h('span.badge', 'public client') : null),
        h('td', h('code', { 'data-field': 'client-id' }, a.client_id)),
        h('td.desc', a.redirect_uri), h('td.desc', a.application_uri), h('td.desc', { 'data-field': 'description' }, a.description),
        h('td',
          h('button', { type: 'button', 'data-action': 'reset-secret', 'aria-label': `Reset the client secret of ${a.name}`, onclick: () => {
            if (!confirm(`Reset the client secret of ${a.name}? Clients using the old one stop working.`)) return;
            attempt(err, async () => { shown.replaceChildren(clientSecret(await api('POST', `${base}/${enc(a.client_id)}/resetclientsecret`))); });
          } }, 'Reset secret'),
          ' ', h('button', { type: 'button', 'data-action': 'edit-application', 'aria-label': `Edit application ${a.name}`, onclick: () => {
            err.clear();
            detail.replaceChildren(editApplication(base, a, async (saved) => {
              detail.replaceChildren();
              await load();
              err.show(`Saved application ${saved.name}.`, 'ok');
            }));
            detail.querySelector('input').focus();
          } }, 'Edit'),
          ' ', h('button', { type: 'button', 'data-action': 'show-tokens', 'aria-label': `Tokens held by ${a.name}`, onclick: () => attempt(err, () => applicationTokens(detail, base, a, err)) }, 'Tokens'),
          ' ', h('button.danger', { type: 'button', 'data-action': 'delete-application', 'aria-label': `Delete application ${a.name}`, onclick: () => {
            if (!confirm(`Delete application ${a.name} and every token it was given?`)) return;
            attempt(err, async () => { await api('DELETE', `${base}/${enc(a.client_id)}`); shown.replaceChildren(); detail.replaceChildren(); await load(); });
          } }, 'Delete')))), 'No OAuth applications.'));
  };
  const create = form([
    { name: 'name', label: 'Name', required: true },
    { name: 'redirect_uri', label: 'Redirect URI', type: 'url', placeholder: 'https://app.example/callback' },
    { name: 'application_uri', label: 'Application URI', type: 'url', placeholder: 'https://app.example/' },
    { name: 'description', label: 'Description', type: 'textarea' },
  ], 'Create application', async (v) => {
    // Empty URIs are left out: the API checks the ones given.
    const req = { name: v.name, description: v.description };
    if (v.redirect_uri) req.redirect_uri = v.redirect_uri;
    if (v.application_uri) req.application_uri = v.application_uri;
    const made = await api('POST', base, req);
    shown.replaceChildren(clientSecret(made));
    create.reset();
    await load();
  }, { action: 'create-application' });
  body.append(err, list, shown, detail, h('h2', 'New application'), create);
  await attempt(err, load);
}

async function teamsTab(body, org, o) {
  const err = notice();
  const members = h('div');
  const showMembers = async (team) => {
    const m = await api('GET', `/api/v1/organization/${enc(org)}/team/${enc(team)}/members`);
    members.replaceChildren(h('h2', `Members of ${team}`),
      table(['Member', 'Kind', ''], m.members.map((x) => h('tr', h('td', x.name), h('td', x.is_robot ? 'robot' : x.kind),
        h('td', m.can_edit ? h('button', { type: 'button', onclick: () => attempt(err, async () => { await api('DELETE', `/api/v1/organization/${enc(org)}/team/${enc(team)}/members/${enc(x.name)}`); showMembers(team); }) }, 'Remove') : null))), 'No members.'),
      m.can_edit ? form([{ name: 'member', label: 'User or robot', required: true }], 'Add member', async (v) => { await api('PUT', `/api/v1/organization/${enc(org)}/team/${enc(team)}/members/${enc(v.member)}`); showMembers(team); }) : null);
  };
  body.append(err,
    table(['Team', 'Role', 'Members', 'Description', ''], Object.values(o.teams).map((t) =>
      h('tr', { 'data-team': t.name }, h('td', t.name), h('td', t.role), h('td', String(t.member_count)), h('td.desc', t.description),
        h('td', h('button', { type: 'button', onclick: () => attempt(err, () => showMembers(t.name)) }, 'Members')))), 'No teams.'),
    members,
    o.is_admin ? [h('h2', 'New team'), form([
      { name: 'team', label: 'Name', required: true },
      { name: 'role', label: 'Role', options: [['member', 'member'], ['creator', 'creator'], ['admin', 'admin']] },
      { name: 'description', label: 'Description' },
    ], 'Create team', async (v) => { await api('PUT', `/api/v1/organization/${enc(org)}/team/${enc(v.team)}`, { role: v.role, description: v.description }); location.reload(); })] : null);
}

async function quotaTab(body, org) {
  const err = notice();
  body.append(err);
  const q = await attempt(err, () => api('GET', `/api/v1/organization/${enc(org)}/quota`));
  if (!q) return;
  if (!q.length) body.append(h('p', 'No quota for this organization.'));
  for (const x of q) {
    const pct = x.limit_bytes ? Math.min(100, (x.usage.bytes / x.limit_bytes) * 100) : 0;
    body.append(h('div.panel',
      h('p', `${bytes(x.usage.bytes)} of ${x.limit} used`),
      h('div.meter', { role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': Math.round(pct), 'aria-label': 'Quota used' }, h('div', { style: `width:${pct}%` })),
      table(['Limit', 'At'], x.limits.map((l) => h('tr', h('td', l.kind), h('td', `${l.limit_percent}%`))), 'No limits.'),
      table(['Repository', 'Bytes'], Object.entries(x.usage.repositories).map(([r, b]) => h('tr', h('td', r), h('td', bytes(b)))), 'No usage yet.')));
  }
}

async function policiesTab(body, org) {
  const err = notice();
  const base = `/api/v1/organization/${enc(org)}`;
  const imm = h('div');
  const prune = h('div');
  const load = async () => {
    const [i, p] = await Promise.all([api('GET', `${base}/immutabilitypolicy/`), api('GET', `${base}/autoprunepolicy/`)]);
    imm.replaceChildren(table(['Tag pattern', 'Matching', ''], i.policies.map((x) => h('tr', h('td', h('code', x.tag_pattern)), h('td', x.tag_pattern_matches ? 'matching tags' : 'other tags'),
      h('td', h('button', { type: 'button', onclick: () => attempt(err, async () => { await api('DELETE', `${base}/immutabilitypolicy/${x.uuid}`); load(); }) }, 'Delete')))), 'No immutability policies.'));
    prune.replaceChildren(table(['Method', 'Value', 'Tag pattern', ''], p.policies.map((x) => h('tr', h('td', x.method), h('td', String(x.value)), h('td', x.tag_pattern || '(all)'),
      h('td', h('button', { type: 'button', onclick: () => attempt(err, async () => { await api('DELETE', `${base}/autoprunepolicy/${x.uuid}`); load(); }) }, 'Delete')))), 'No auto-prune policies.'));
  };
  body.append(err, h('h2', 'Immutability'), imm,
    form([{ name: 'tag_pattern', label: 'Tag pattern (regular expression)', required: true }], 'Add immutability policy', async (v) => { await api('POST', `${base}/immutabilitypolicy/`, { tag_pattern: v.tag_pattern, tag_pattern_matches: true }); load(); }),
    h('h2', 'Auto-prune'), prune,
    form([
      { name: 'method', label: 'Keep', options: [['number_of_tags', 'the newest N tags'], ['creation_date', 'tags younger than (e.g. 7d)']] },
      { name: 'value', label: 'N or age', required: true },
    ], 'Add auto-prune policy', async (v) => { await api('POST', `${base}/autoprunepolicy/`, { method: v.method, value: v.method === 'number_of_tags' ? Number(v.value) : v.value }); load(); }));
  await attempt(err, load);
}

// ---------- account ----------

export async function accountPage(main) {
  const err = notice();
  main.append(title('Account'), err);
  const list = h('div');
  const shown = h('div');
  const load = async () => {
    const t = await api('GET', '/api/v1/user/apptoken');
    list.replaceChildren(table(['Title', 'Scopes', 'Created', 'Expires', ''], t.tokens.map((x) => h('tr', h('td', x.title), h('td', x.scopes.join(' ')), h('td', when(x.created)), h('td', x.expiration ? when(x.expiration) : 'never'),
      h('td', confirmButton('Revoke', `Revoke ${x.title}?`, async () => { await api('DELETE', `/api/v1/user/apptoken/${x.uuid}`); load(); }, err)))), 'No application tokens.'));
  };
  const scopes = ['repo:read', 'repo:write', 'repo:admin', 'repo:create', 'org:admin', 'user:read', 'user:admin', 'super:user'];
  main.append(h('h2', 'Application tokens'), list, shown,
    form([{ name: 'title', label: 'Title', required: true }, ...scopes.map((s) => ({ name: s, label: s, type: 'checkbox', value: s === 'repo:read' }))], 'Create token', async (v) => {
      const made = await api('POST', '/api/v1/user/apptoken', { title: v.title, scopes: scopes.filter((s) => v[s]) });
      shown.replaceChildren(h('p', 'Shown once:'), copyable(made.token.token_code, 'token'));
      await load();
    }, { action: 'create-token' }),
    h('h2', 'Password'),
    form([{ name: 'password', label: 'New password', type: 'password', required: true, autocomplete: 'new-password' }, { name: 'again', label: 'Again', type: 'password', required: true, autocomplete: 'new-password' }], 'Change password', async (v, e) => {
      if (v.password !== v.again) throw new Error('the two passwords differ');
      await api('PUT', '/api/v1/user/', { password: v.password });
      e.show('Password changed: every session, this one included, now ends. Sign in again.', 'ok');
    }),
    h('h2', 'The berth command'),
    copyable(`berth login --endpoint ${location.origin} --user ${session.user} --password-file PASSWORD_FILE`, 'berth login command'));
  await attempt(err, load);
}
