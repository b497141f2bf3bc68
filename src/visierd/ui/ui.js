// SPDX-License-Identifier: Apache-2.0
//
// visierd's /ui page: reads visierd's own JSON routes (same origin, GET only) and fills the
// page in, every REFRESH_MS. Builds every element with the DOM (textContent, never HTML
// strings: the page's Trusted Types policy refuses those), sends nothing but reads, keeps
// nothing in storage, and shows no secret: /status never holds one.
//
// Where each datum comes from:
//   counts, oldest queued age, token, rate budget, publisher and its current call: GET /status
//   sparklines (one sample a minute, the last hour):                             GET /status/history
//   recent jobs (state filter server-side, text filter here), oldest queued job:  GET /jobs
//   per-item results of the selected job:                                        GET /jobs/{id}
//   export definitions / export runs (jobs whose operation is "export"):         GET /exports, GET /jobs
'use strict';

(function () {
  const REFRESH_MS = 5000;
  const FETCH_TIMEOUT_MS = 4000;
  const JOBS_SHOWN = 50;
  const RECENT_LIMIT = 200; // jobs read to find recent export runs
  const STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];

  const $ = (id) => document.getElementById(id);
  let filterText = '';
  let timer = null;

  // ---- small helpers ----

  function setText(id, value) {
    const el = $(id);
    if (el) el.textContent = value === null || value === undefined ? '–' : String(value);
    return el;
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return '–';
    let s = Math.max(0, Math.round(Number(seconds)));
    if (s < 60) return s + ' s';
    const parts = [];
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) parts.push(d + ' d');
    if (h) parts.push(h + ' h');
    if (m && !d) parts.push(m + ' min');
    if (!d && !h) parts.push(s + ' s');
    return parts.join(' ');
  }

  function when(iso) {
    if (!iso) return '–';
    const t = new Date(iso);
    return isNaN(t) ? iso : t.toLocaleString();
  }

  function compact(v, max) {
    if (v === null || v === undefined) return '';
    const s = typeof v === 'string' ? v : JSON.stringify(v);
    return s.length > max ? s.slice(0, max - 1) + '…' : s;
  }

  // A GET to visierd's own origin, bounded in time. Resolves to the parsed JSON; rejects
  // with visierd's own message (its Status shape) when the answer is not 2xx.
  async function getJSON(path) {
    const ctl = new AbortController();
    const t = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const r = await fetch(path, { method: 'GET', credentials: 'same-origin', cache: 'no-store',
                                    headers: { Accept: 'application/json', 'X-Visierd-Request': 'true' },
                                    signal: ctl.signal });
      let body = null;
      try { body = await r.json(); } catch (e) { body = null; }
      if (!r.ok) {
        const why = body && (body.message || body.localizedMessage);
        const err = new Error(path + ': ' + r.status + (why ? ' ' + why : ''));
        err.status = r.status;
        throw err;
      }
      return body;
    } finally {
      clearTimeout(t);
    }
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // ---- the URL fragment: #state=failed&q=text&job=ID (so a view can be linked) ----

  function hashParams() {
    return new URLSearchParams(location.hash.replace(/^#/, ''));
  }

  function setHash(key, value) {
    const p = hashParams();
    if (value) p.set(key, value); else p.delete(key);
    const s = p.toString();
    history.replaceState(null, '', s ? '#' + s : location.pathname + location.search);
  }

  // ---- sections ----

  function renderStatus(st) {
    setText('version', st.version);
    setText('uptime', duration(st.uptime_seconds));
    const jobs = st.jobs || {};
    for (const s of STATES) {
      const c = setText('count-' + s, jobs[s]);
      if (c) c.setAttribute('data-value', String(jobs[s]));
    }
    const age = jobs.oldest_queued_age_seconds;
    const oq = $('oldest-queued');
    oq.setAttribute('data-age', age === null || age === undefined ? '' : String(Math.floor(age)));
    if (age === null || age === undefined) oq.textContent = 'none queued';

    const tok = st.token || {};
    const ts = setText('token-state', tok.state);
    ts.className = 'badge token-' + (tok.state || 'none');
    ts.setAttribute('data-valid', tok.valid ? 'true' : 'false');
    const exp = setText('token-expires', tok.valid ? duration(tok.expires_in_seconds) :
      (tok.next_login_in_seconds ? 'not valid; next login in ' + duration(tok.next_login_in_seconds) : 'not valid'));
    exp.setAttribute('data-seconds', tok.valid ? String(tok.expires_in_seconds) : '');
    setText('token-logins', tok.logins);
    setText('token-failures', tok.login_failures);
    setText('token-error', tok.last_login_error || 'none');

    const rb = st.rate_budget || {};
    for (const [k, rem, lim] of [['minute', rb.minute_remaining, rb.minute_limit], ['hour', rb.hour_remaining, rb.hour_limit]]) {
      const m = $('budget-' + k + '-meter');
      m.max = lim || 1;
      m.low = (lim || 1) * 0.2;
      m.optimum = lim || 1;
      m.value = rem || 0;
      const t = setText('budget-' + k, rem + ' of ' + lim);
      t.setAttribute('data-remaining', String(rem));
    }

    const pub = st.publisher || {};
    setText('pub-write-calls', pub.write_calls);
    setText('pub-items-sent', pub.items_sent);
    setText('pub-retries', pub.retries);
    setText('pub-splits', pub.splits);
    const cc = $('current-call');
    const call = pub.current_call;
    if (call) {
      cc.textContent = call.method + ' ' + call.endpoint + ' (' + call.operation + '): ' + call.items + ' item' +
        (call.items === 1 ? '' : 's') + ' of ' + call.jobs + ' job' + (call.jobs === 1 ? '' : 's') +
        (call.first_job ? ', from job ' + call.first_job : '') + ', for ' + duration(Math.floor(call.elapsed_seconds));
      cc.setAttribute('data-active', 'true');
      cc.setAttribute('data-first-job', call.first_job ? String(call.first_job) : '');
    } else {
      cc.textContent = 'idle';
      cc.setAttribute('data-active', 'false');
      cc.setAttribute('data-first-job', '');
    }
  }

  // One sparkline per state: the samples' counts over the hour (x: time, y: count scaled to
  // the state's own maximum, so that a small queue still shows its shape).
  function renderHistory(h) {
    const samples = (h && h.samples) || [];
    const span = (h && h.span_seconds ? h.span_seconds : 3600) * 1000;
    const now = h && h.now_ms ? h.now_ms : Date.now();
    const NS = 'http://www.w3.org/2000/svg';
    for (const s of STATES) {
      const svg = $('spark-' + s);
      if (!svg) continue;
      clear(svg);
      svg.setAttribute('data-samples', String(samples.length));
      if (samples.length === 0) continue;
      const max = Math.max(1, ...samples.map((x) => x[s] || 0));
      const pts = samples.map((x) => {
        const px = 120 - ((now - x.at_ms) / span) * 120;
        const py = 30 - ((x[s] || 0) / max) * 28;
        return px.toFixed(1) + ',' + py.toFixed(1);
      });
      if (pts.length === 1) pts.unshift('0,' + pts[0].split(',')[1]); // one sample: a flat line
      const area = document.createElementNS(NS, 'polygon');
      area.setAttribute('class', 'area');
      area.setAttribute('points', pts[0].split(',')[0] + ',31 ' + pts.join(' ') + ' ' + pts[pts.length - 1].split(',')[0] + ',31');
      svg.appendChild(area);
      const line = document.createElementNS(NS, 'polyline');
      line.setAttribute('points', pts.join(' '));
      svg.appendChild(line);
      const title = document.createElementNS(NS, 'title');
      title.textContent = s + ': ' + samples.map((x) => x[s]).join(', ');
      svg.appendChild(title);
    }
  }

  function jobMatches(j) {
    if (!filterText) return true;
    const hay = [j.id, j.state, j.operation, j.client, j.error, j.tenant].join(' ').toLowerCase();
    return hay.indexOf(filterText.toLowerCase()) >= 0;
  }

  function renderJobs(list) {
    const body = $('jobs-body');
    const selected = hashParams().get('job');
    clear(body);
    const jobs = (list && list.jobs) || [];
    const shown = jobs.filter(jobMatches).slice(0, JOBS_SHOWN);
    for (const j of shown) {
      const tr = el('tr', { 'data-job-id': String(j.id), 'data-state': j.state, 'data-operation': j.operation });
      if (selected === String(j.id)) tr.className = 'selected';
      const idCell = el('td');
      const b = el('button', { type: 'button', class: 'link', 'data-job': String(j.id) }, j.id);
      b.addEventListener('click', () => { setHash('job', String(j.id)); refreshDetail(); markSelected(); });
      idCell.appendChild(b);
      tr.appendChild(idCell);
      const stCell = el('td');
      stCell.appendChild(el('span', { class: 'badge state-' + j.state }, j.state));
      tr.appendChild(stCell);
      tr.appendChild(el('td', {}, j.operation));
      tr.appendChild(el('td', {}, j.items));
      tr.appendChild(el('td', {}, j.client || '–'));
      tr.appendChild(el('td', {}, when(j.created_at)));
      tr.appendChild(el('td', {}, when(j.finished_at)));
      tr.appendChild(el('td', {}, j.upstream_status === null ? '–' : j.upstream_status));
      tr.appendChild(el('td', { class: 'wrap' }, compact(j.error, 160)));
      body.appendChild(tr);
    }
    setText('jobs-shown', shown.length + ' shown' + (filterText ? ' (filtered)' : '') + (list && list.next ? '; older jobs not shown' : ''));
  }

  function markSelected() {
    const selected = hashParams().get('job');
    for (const tr of $('jobs-body').querySelectorAll('tr')) {
      tr.className = tr.getAttribute('data-job-id') === selected ? 'selected' : '';
    }
  }

  async function refreshDetail() {
    const id = hashParams().get('job');
    const box = $('job-detail');
    if (!id || !/^[0-9]+$/.test(id)) { box.hidden = true; return; }
    let j;
    try {
      j = await getJSON('/jobs/' + id);
    } catch (e) {
      box.hidden = false;
      setText('detail-id', id);
      setText('detail-summary', String(e.message));
      clear($('items-body'));
      return;
    }
    box.hidden = false;
    box.setAttribute('data-job-id', String(j.id));
    setText('detail-id', j.id);
    const ds = setText('detail-state', j.state);
    ds.className = 'badge state-' + j.state;
    setText('detail-summary', j.operation + ', ' + j.items + ' item' + (j.items === 1 ? '' : 's') + ', ' + j.attempts +
      ' attempt' + (j.attempts === 1 ? '' : 's') + (j.upstream_status ? ', Visier answered ' + j.upstream_status : '') +
      (j.error ? ': ' + j.error : ''));
    const body = $('items-body');
    clear(body);
    for (const it of j.item_results || []) {
      const tr = el('tr', { 'data-index': String(it.index), 'data-state': it.state });
      tr.appendChild(el('td', {}, it.index));
      const sc = el('td');
      sc.appendChild(el('span', { class: 'badge state-' + it.state }, it.state));
      tr.appendChild(sc);
      tr.appendChild(el('td', { class: 'wrap' }, compact(it.item, 200)));
      tr.appendChild(el('td', { class: 'wrap' }, compact(it.result, 300)));
      body.appendChild(tr);
    }
  }

  function renderOldest(queuedList, status) {
    const oq = $('oldest-queued');
    const age = status.jobs && status.jobs.oldest_queued_age_seconds;
    if (age === null || age === undefined) return;
    const q = (queuedList && queuedList.jobs) || [];
    const oldest = q.length && !queuedList.next ? q[q.length - 1] : null;
    oq.setAttribute('data-job-id', oldest ? String(oldest.id) : '');
    oq.textContent = (oldest ? 'job ' + oldest.id + ' (' + oldest.operation + '), ' : 'older than the newest ' + q.length + ' queued, ') +
      'waiting ' + duration(age);
  }

  function renderExports(defs, recent) {
    const names = defs && defs.exports ? (Array.isArray(defs.exports) ? defs.exports.map((d) => d.name || d) : Object.keys(defs.exports)) : [];
    setText('export-defs', names.length ? names.join(', ') : 'none');
    const body = $('exports-body');
    clear(body);
    const runs = ((recent && recent.jobs) || []).filter((j) => j.operation === 'export').slice(0, 20);
    for (const j of runs) {
      const res = j.result || {};
      const tr = el('tr', { 'data-run-id': String(j.id), 'data-state': j.state });
      tr.appendChild(el('td', {}, j.id));
      const sc = el('td');
      sc.appendChild(el('span', { class: 'badge state-' + j.state }, j.state));
      tr.appendChild(sc);
      tr.appendChild(el('td', {}, res.export || '–'));
      tr.appendChild(el('td', {}, when(j.created_at)));
      tr.appendChild(el('td', {}, when(j.finished_at)));
      tr.appendChild(el('td', { class: 'wrap' }, j.state === 'succeeded' && res.bytes !== undefined
        ? res.bytes + ' bytes of ' + (res.format || '?') : compact(j.error, 160)));
      body.appendChild(tr);
    }
    if (!runs.length) body.appendChild(el('tr', {}, '')).appendChild(el('td', { colspan: '6', class: 'muted' }, 'no recent export run'));
  }

  // ---- the refresh ----

  async function refresh() {
    clearTimeout(timer);
    const state = $('filter-state').value;
    try {
      const [st, hist, list, recent, queued, defs] = await Promise.all([
        getJSON('/status'),
        getJSON('/status/history'),
        getJSON('/jobs?limit=' + (filterText ? 500 : JOBS_SHOWN) + (state ? '&state=' + encodeURIComponent(state) : '')),
        getJSON('/jobs?limit=' + RECENT_LIMIT),
        getJSON('/jobs?state=queued&limit=500'),
        getJSON('/exports').catch(() => null),
      ]);
      renderStatus(st);
      renderHistory(hist);
      renderOldest(queued, st);
      renderJobs(list);
      renderExports(defs, recent);
      await refreshDetail();
      $('error').hidden = true;
      const conn = setText('conn', 'connected');
      conn.className = 'badge ok';
      setText('updated', new Date().toLocaleTimeString());
      document.body.setAttribute('data-state', 'ready');
    } catch (e) {
      const msg = $('error');
      msg.hidden = false;
      msg.textContent = 'Cannot read visierd: ' + e.message +
        (e.status === 401 ? ' (client tokens are configured: see visierd(8), "The /ui page")' : '');
      const conn = setText('conn', 'not connected');
      conn.className = 'badge down';
      document.body.setAttribute('data-state', 'error');
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  function start() {
    setText('refresh-seconds', REFRESH_MS / 1000);
    const p = hashParams();
    const sel = $('filter-state');
    if (p.get('state') && STATES.indexOf(p.get('state')) >= 0) sel.value = p.get('state');
    filterText = p.get('q') || '';
    $('filter-text').value = filterText;
    sel.addEventListener('change', () => { setHash('state', sel.value); refresh(); });
    $('filter-text').addEventListener('input', (ev) => { filterText = ev.target.value.trim(); setHash('q', filterText); refresh(); });
    $('detail-close').addEventListener('click', () => { setHash('job', ''); refreshDetail(); markSelected(); });
    window.addEventListener('hashchange', () => { refreshDetail(); markSelected(); });
    refresh();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
