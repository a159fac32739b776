// The cluster page (superusers): regions and their nodes (with each
// node's disk, as the node reports it), the RTT matrix as a heat map,
// leader changes seen while the page is open, the leadership transfer and
// the region drill (`POST /api/v1/drill/region`: the node refuses what
// `berth drill region` refuses; `DELETE` heals). It polls
// `/api/v1/cluster/status` once a second, so a failover or a drill shows
// as it happens, without a reload. The same poll reads the recent drill
// reports (`/api/v1/drill/reports`, kept in the metadata, so every node
// lists the same: the CLI's drills and the console's).

import { h, api, attempt, notice, table, title, bytes } from './ui.js';

const changes = [];
let lastLeader;
let lastTerm;

function heat(ms) {
  if (ms === undefined || ms === null) return 'none';
  if (ms < 5) return 'h0';
  if (ms < 30) return 'h1';
  if (ms < 80) return 'h2';
  if (ms < 150) return 'h3';
  return 'h4';
}

// A node's filesystem as it reported it: used of total, and a meter.
// A node that did not answer (down, cut off) has none.
function disk(d) {
  if (!d) return h('dd', { 'data-field': 'disk-use', 'data-total': '' }, 'not reported');
  const pct = d.total_bytes ? (d.used_bytes / d.total_bytes) * 100 : 0;
  return h('dd', { 'data-field': 'disk-use', 'data-total': String(d.total_bytes), 'data-used': String(d.used_bytes) },
    `${bytes(d.used_bytes)} used of ${bytes(d.total_bytes)}`,
    h('div.meter', { role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': Math.round(pct), 'aria-label': 'Disk used', title: `${bytes(d.available_bytes)} free` }, h('div', { style: `width:${pct}%` })));
}

// A report's key figures, from whatever the drill measured: the CLI's
// failover and region reports, or a console drill's few figures. Any
// field may be missing (a report is whatever an administrator posted).
function figures(r) {
  const f = r.figures || {};
  const n = (v) => (typeof v === 'number' ? String(v) : '?');
  if (r.kind === 'failover') {
    return `writes ${n(f.writes_ok)} ok, ${n(f.writes_failed)} failed, longest without a write ${n(f.write_unavailable_ms)} ms; reads ${f.reads_stopped ? 'STOPPED on some node' : 'never stopped'}`;
  }
  if (f.writes_outside) {
    const wo = f.writes_outside;
    const wi = f.writes_inside || {};
    const gaps = (f.reads || []).map((x) => x.longest_gap_ms).filter((x) => typeof x === 'number');
    const rejoin = f.rejoined ? `rejoined ${n(f.rejoin_ms)} ms after the heal` : 'NOT rejoined';
    return `cut off ${n(f.isolated_ms)} ms; writes outside ${n(wo.ok)} ok, longest without a write ${n(wo.longest_unavailable_ms)} ms; inside ${n(wi.refused)} refused; longest read gap ${gaps.length ? Math.max(...gaps) : '?'} ms; ${rejoin}`;
  }
  return `cut off ${n(f.isolated_ms)} ms (of ${n(f.duration_ms)} asked), ended by ${f.ended_by === 'healed' ? 'a heal' : f.ended_by === 'deadline' ? 'its deadline' : '?'}${f.source === 'console' ? ', from the console' : ''}`;
}

function duration(ms) {
  if (typeof ms !== 'number' || ms < 0) return '?';
  return ms < 10000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

function reportsTable(reports) {
  return table(['When', 'Kind', 'Target', 'Nodes', 'By', 'Duration', 'Figures'], reports.map((r) => h('tr', { 'data-drill-report': r.kind, 'data-target': r.target },
    h('td', new Date(r.started_ms).toLocaleString()), h('td', { 'data-field': 'kind' }, r.kind), h('td', { 'data-field': 'target' }, r.target),
    h('td', (r.nodes || []).map((x) => `node ${x}`).join(', ') || '—'), h('td', { 'data-field': 'by' }, r.by),
    h('td', duration(r.ended_ms - r.started_ms)), h('td', { 'data-field': 'figures' }, figures(r)))), 'No drill recorded yet.');
}

function render(view, s, seenAt) {
  if (s.leader !== lastLeader || s.term !== lastTerm) {
    if (lastLeader !== undefined) changes.unshift({ at: seenAt, from: lastLeader, to: s.leader, term: s.term });
    lastLeader = s.leader;
    lastTerm = s.term;
  }
  const regions = {};
  for (const n of s.nodes) (regions[n.region] = regions[n.region] || []).push(n);
  const map = h('div.map', { 'aria-label': 'Regions and nodes' }, Object.keys(regions).sort().map((r) =>
    h('section.region', { 'data-region': r }, h('h3', r), regions[r].map((n) => {
      // The leader knows every follower's progress: one it has none for
      // is not answering it.
      const health = n.leader ? 'healthy' : s.leader === null || s.leader === undefined ? 'no leader' : n.matched_index === null || n.matched_index === undefined ? 'unreachable' : n.lag > 1000 ? 'lagging' : 'healthy';
      const kind = n.leader ? 'leader' : health === 'unreachable' ? 'down' : 'follower';
      return h(`div.node.${kind}`, { 'data-node': n.id, 'data-leader': n.leader ? 'true' : 'false', 'data-health': health },
        h('strong', `node ${n.id}`), h('span.role', n.leader ? 'leader' : n.role),
        h('dl', h('dt', 'health'), h('dd', health),
          h('dt', 'lag'), h('dd', n.lag === null || n.lag === undefined ? 'unknown' : `${n.lag} entries`),
          h('dt', 'matched'), h('dd', n.matched_index ?? '—'),
          h('dt', 'blobs held'), h('dd', { 'data-field': 'blobs-held' }, n.storage ? `${n.storage.blobs_held} (${bytes(n.storage.bytes_held)})` : 'n/a'),
          h('dt', 'backlog'), h('dd', { 'data-field': 'backlog' }, n.storage ? `${n.storage.backlog_blobs} blobs (${bytes(n.storage.backlog_bytes)})` : 'n/a'),
          h('dt', 'disk'), disk(n.disk),
          h('dt', 'http'), h('dd', n.http_addr)));
    }))));
  const ids = s.nodes.map((n) => n.id);
  const rtt = {};
  for (const row of s.rtt_ms || []) for (const [to, ms] of row.to) rtt[`${row.from}-${to}`] = ms;
  const matrix = h('table.heat', { 'aria-label': 'Round-trip times in milliseconds' },
    h('thead', h('tr', h('th', { scope: 'col' }, 'from \\ to'), ids.map((i) => h('th', { scope: 'col' }, `node ${i}`)))),
    h('tbody', ids.map((a) => h('tr', h('th', { scope: 'row' }, `node ${a}`), ids.map((b) => {
      const ms = rtt[`${a}-${b}`];
      return h(`td.${a === b ? 'self' : heat(ms)}`, { 'data-rtt': `${a}-${b}` }, a === b ? '—' : ms === undefined ? '?' : `${ms.toFixed(1)} ms`);
    })))));
  view.replaceChildren(
    h('p.summary', { 'data-field': 'leader' }, `Leader: ${s.leader === null || s.leader === undefined ? 'none (election under way)' : `node ${s.leader}`} · term ${s.term} · answered by node ${s.answered_by} · ${new Date(seenAt).toLocaleTimeString()}`),
    map,
    h('h2', 'Round-trip times'), matrix,
    h('h2', 'Leader changes seen'),
    table(['When', 'From', 'To', 'Term'], changes.slice(0, 20).map((c) => h('tr', { 'data-change': 'leader' }, h('td', new Date(c.at).toLocaleTimeString()), h('td', c.from ?? 'none'), h('td', c.to ?? 'none'), h('td', String(c.term)))), 'No leader change since this page opened.'));
}

export async function clusterPage(main) {
  const err = notice();
  const view = h('div', { 'aria-live': 'off' });
  const transfer = h('select', { 'aria-label': 'Transfer leadership to', 'data-field': 'transfer-to' });
  const actions = h('div.toolbar', transfer,
    h('button', { type: 'button', 'data-action': 'transfer-leader', onclick: () => attempt(err, async () => {
      if (!confirm('Transfer leadership? Writes pause for an election.')) return;
      const r = await api('POST', '/api/v1/cluster/transfer-leader', transfer.value ? { to: Number(transfer.value) } : {});
      err.show(`Leadership moved from node ${r.previous} to node ${r.leader}.`, 'ok');
    }) }, 'Transfer leadership'));
  // The region drill: the region, how long, and whether to drill when
  // the rest would hold no majority (the node refuses that otherwise).
  const region = h('select', { id: 'drill-region', 'data-field': 'drill-region' });
  const seconds = h('input', { id: 'drill-seconds', type: 'number', min: 1, max: 600, value: 30, 'data-field': 'drill-seconds' });
  const force = h('input', { id: 'drill-force', type: 'checkbox', 'data-field': 'drill-force' });
  const drilled = h('div', { 'data-field': 'drill' });
  let shownRegions = null;
  const drillErr = notice();
  const heal = (r) => h('button', { type: 'button', 'data-action': 'heal-region', onclick: () => attempt(drillErr, async () => {
    const done = await api('DELETE', `/api/v1/drill/region/${encodeURIComponent(r)}`);
    drilled.replaceChildren();
    drillErr.show(`Region ${done.region} healed: node ${done.healed.join(', node ')} talk to every peer again.`, 'ok');
  }) }, `Heal ${r} now`);
  const drill = h('details.panel', { 'data-panel': 'drill' }, h('summary', 'Region drill'),
    h('p', 'Cuts every node of a region off from the rest of the cluster (both ways) for a while, as ', h('code', 'berth drill region'), ' does; the nodes heal by themselves at the end. Watch the map meanwhile; the command line reports writes and reads measured through the drill. Either drill, once over, is listed under Recent drills.'),
    h('div.toolbar', h('label', { for: 'drill-region' }, 'Region'), region, h('label', { for: 'drill-seconds' }, 'Seconds'), seconds,
      h('label', force, ' Drill even without a majority outside'),
      h('button.danger', { type: 'button', 'data-action': 'drill-region', onclick: () => attempt(drillErr, async () => {
        const r = region.value;
        if (!confirm(`Cut region ${r} off for ${seconds.value} s? Writes through its nodes stop meanwhile.`)) return;
        const d = await api('POST', '/api/v1/drill/region', { region: r, duration_ms: Math.round(Number(seconds.value) * 1000), force: force.checked });
        const until = new Date(Date.now() + Math.max(...d.isolated.map((i) => i.heals_in_ms)));
        drilled.replaceChildren(h('p', { 'data-drilled': d.region },
          `Region ${d.region} is cut off: `, d.isolated.map((i) => h('span', { 'data-isolated': String(i.node) }, `node ${i.node} `)),
          `until ${until.toLocaleTimeString()} (the rest holds ${d.voters_outside} of ${d.voters} voters${d.forced ? ', forced' : ''}). `), heal(d.region));
        drillErr.show(`Region ${d.region} cut off.`, 'ok');
      }) }, 'Cut region off')),
    drillErr, drilled);
  // Recent drills, newest first, refreshed by the poll below.
  const reports = h('section', { 'data-panel': 'drill-reports', 'aria-label': 'Recent drills' }, h('h2', 'Recent drills'), h('p.empty', 'Loading…'));
  let shownReports = null;
  main.append(title('Cluster'), err, actions, drill, view, reports);
  const tick = async () => {
    if (!document.body.contains(view)) return; // left the page
    try {
      const s = await api('GET', '/api/v1/cluster/status');
      render(view, s, Date.now());
      const want = ['', ...s.nodes.filter((n) => !n.leader).map((n) => String(n.id))];
      if ([...transfer.options].map((o) => o.value).join() !== want.join()) {
        // A new leader changes the choices; a choice still offered stays.
        const was = transfer.value;
        transfer.replaceChildren(...want.map((v) => h('option', { value: v, selected: v === was }, v ? `node ${v}` : 'any node')));
      }
      const regions = [...new Set(s.nodes.filter((n) => n.role === 'voter' || n.role === 'learner').map((n) => n.region))].sort();
      // Rebuilt only when the cluster's regions change, not at every tick:
      // the choice stays while a person makes it.
      if (shownRegions !== regions.join()) {
        shownRegions = regions.join();
        const was = region.value;
        region.replaceChildren(...regions.map((r) => h('option', { value: r, selected: r === was }, r)));
      }
      const recent = await api('GET', '/api/v1/drill/reports');
      // Redrawn only when the list changes: a person may be reading it.
      if (JSON.stringify(recent) !== shownReports) {
        shownReports = JSON.stringify(recent);
        reports.replaceChildren(h('h2', 'Recent drills'), reportsTable(recent));
      }
      if (err.classList.contains('stale')) err.clear();
    } catch (e) {
      err.show(`Status unavailable: ${e.message}`);
      err.classList.add('stale');
    }
    setTimeout(tick, 1000);
  };
  await tick();
}
