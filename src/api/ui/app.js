// wasup's QR page: keeps the session list and one session's QR up to date from the REST API,
// authenticated by the HttpOnly cookie set at sign-in. No dependencies, no build step.
'use strict';

/** How often a session page asks for its session's state. */
const SESSION_POLL_MS = 2000;
/** How often the list page asks for the sessions. */
const LIST_POLL_MS = 3000;
/** Longest wait between attempts while wasup fails to answer. */
const MAX_BACKOFF_MS = 30000;

/** A non-2xx answer. */
class HttpError extends Error {
  constructor(status, retryAfter) {
    super(`wasup answered ${status}`);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** GETs `path` as JSON; a 401 (the login expired) reloads the page, which then asks to sign in. */
async function getJson(path) {
  const response = await fetch(path, {
    headers: { Accept: 'application/json' },
    credentials: 'same-origin',
    cache: 'no-store',
  });
  if (response.status === 401) {
    window.location.reload();
  }
  if (!response.ok) {
    throw new HttpError(response.status, Number(response.headers.get('Retry-After')) || 0);
  }
  return response.json();
}

/** Shows or clears the banner at the top. */
function notice(text) {
  const banner = document.getElementById('notice');
  banner.textContent = text || '';
  banner.hidden = !text;
}

/**
 * Runs `step` every `interval` ms while the page is visible. `step` returns false to stop;
 * failures are shown and retried with backoff (or after Retry-After).
 */
function poll(step, interval) {
  let failures = 0;
  let timer = null;
  let stopped = false;
  const run = async () => {
    timer = null;
    let delay = interval;
    try {
      const goOn = await step();
      notice('');
      failures = 0;
      if (goOn === false) {
        stopped = true;
        return;
      }
    } catch (error) {
      failures += 1;
      delay = Math.min(interval * 2 ** failures, MAX_BACKOFF_MS);
      if (error instanceof HttpError && error.status === 429) {
        delay = Math.max(delay, error.retryAfter * 1000);
        notice(`Too many requests; retrying in ${Math.round(delay / 1000)} s.`);
      } else if (error instanceof HttpError) {
        notice(`wasup answered ${error.status}; retrying in ${Math.round(delay / 1000)} s.`);
      } else {
        notice(`wasup is not reachable; retrying in ${Math.round(delay / 1000)} s.`);
      }
    }
    if (!document.hidden) {
      timer = setTimeout(run, delay);
    }
  };
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && !stopped && timer === null) {
      run();
    }
  });
  run();
}

/** An age as people read it: 42 s, 5 min, 3 h, 2 d. */
function age(ms) {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h`;
  return `${Math.floor(seconds / 86400)} d`;
}

/** An element with a class and text. */
function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Sets a state badge's text and colour. */
function badge(node, state) {
  node.textContent = state;
  node.className = `state state-${state}`;
}

/** GET /ui: redraws the session table from GET /sessions. */
function listPage() {
  const body = document.querySelector('#sessions tbody');
  const render = (list) => {
    document.getElementById('count').textContent = list.sessions.length;
    document.getElementById('pending').textContent = list.pendingCount;
    const rows = list.sessions.map((session) => {
      const row = document.createElement('tr');
      const link = element('a', '', session.session_id);
      link.href = `/ui/sessions/${encodeURIComponent(session.session_id)}`;
      const idCell = element('td');
      idCell.append(link);
      const stateCell = element('td');
      const state = element('span');
      badge(state, session.state);
      stateCell.append(state);
      row.append(idCell, element('td', '', session.user_id ?? '—'), stateCell,
        element('td', '', age(session.age_ms)));
      return row;
    });
    if (rows.length === 0) {
      const row = element('tr', 'empty');
      const cell = element('td', '', 'No sessions. Start one with POST /start.');
      cell.colSpan = 4;
      row.append(cell);
      rows.push(row);
    }
    body.replaceChildren(...rows);
  };
  poll(async () => render(await getJson('/sessions')), LIST_POLL_MS);
}

/** What each state means for the person holding the phone. */
const STATE_TEXT = {
  starting: 'Starting: the first QR code is on its way…',
  pending: 'Open WhatsApp on your phone → Settings → Linked devices → Link a device, and scan this code.',
  pairing: 'Scanned. Linking the device…',
  connecting: 'The connection dropped; reconnecting…',
  error: 'WhatsApp cannot be reached right now; retrying…',
  failed: 'WhatsApp refused this session (see the reason below). Remove it or start a new one.',
  restarting: 'The session crashed and is restarting…',
};

/** Why a session ended, from the last status it reported. */
const ENDED_TEXT = {
  expired: 'The QR codes expired before anyone scanned them.',
  inactive: 'The session was logged out or stopped.',
};

/** GET /ui/sessions/{id}: the live QR, then "connected", or why the session ended. */
function sessionPage() {
  const root = document.getElementById('session');
  const id = root.dataset.sessionId;
  const base = `/sessions/${encodeURIComponent(id)}`;
  const $ = (name) => document.getElementById(name);
  const view = {
    state: $('state'), status: $('status'), detail: $('detail'), box: $('qr-box'), qr: $('qr'),
    expires: $('expires'), connected: $('connected'), phone: $('phone'), ended: $('ended'),
    endedReason: $('ended-reason'),
  };
  /** The QR text on screen, the inspection counters it was fetched for, its expiry. */
  let shown = null;
  let shownFor = null;
  let expiresAt = 0;
  let rotations = 0;
  let lastReport = null;

  const show = (state, text) => {
    document.body.dataset.state = state;
    badge(view.state, state);
    view.status.textContent = text;
    view.status.hidden = !text;
    view.box.hidden = state !== 'pending' || shown === null;
    view.connected.hidden = state !== 'active';
    view.ended.hidden = state !== 'ended';
  };

  const tick = () => {
    if (shown === null) return;
    const left = Math.max(0, Math.round((expiresAt - Date.now()) / 1000));
    view.expires.textContent = left > 0 ? `This code changes in ${left} s.` : 'Getting a new code…';
  };
  setInterval(tick, 1000);

  const refreshQr = async (report) => {
    const actor = report.actor || {};
    const counters = `${report.generation}:${actor.qr_count ?? ''}`;
    if (shown !== null && counters === shownFor && Date.now() < expiresAt) return;
    let qr;
    try {
      qr = await getJson(`${base}/qr`);
    } catch (error) {
      if (error instanceof HttpError && error.status === 404) return; // between two codes
      throw error;
    }
    shownFor = counters;
    expiresAt = Date.now() + qr.expires_in * 1000;
    if (qr.raw !== shown) {
      shown = qr.raw;
      rotations += 1;
      view.qr.src = qr.qr;
      view.qr.dataset.rotation = String(rotations);
    }
    tick();
  };

  const end = (report) => {
    const status = report?.actor?.last_status;
    view.endedReason.textContent = ENDED_TEXT[status]
      ?? 'This session no longer exists: it expired, was logged out, or was removed.';
    shown = null;
    show('ended', '');
    return false;
  };

  const step = async () => {
    let report;
    try {
      report = await getJson(base);
    } catch (error) {
      if (error instanceof HttpError && error.status === 404) return end(lastReport);
      throw error;
    }
    lastReport = report;
    const actor = report.actor || {};
    const retry = actor.next_retry_in_ms != null
      ? ` (next attempt in ${Math.ceil(actor.next_retry_in_ms / 1000)} s)` : '';
    view.detail.textContent = actor.last_error ? `Last error: ${actor.last_error}${retry}` : '';
    if (report.state === 'closed') return end(report);
    if (report.state === 'active') {
      shown = null;
      view.phone.textContent = actor.phone ? `Phone: +${actor.phone}` : '';
      show('active', '');
      return true;
    }
    if (report.state === 'pending') await refreshQr(report);
    let text = STATE_TEXT[report.state] ?? report.state;
    if (!report.responsive) text = 'The session is not answering right now…';
    else if (report.state === 'pending' && shown === null) text = 'Waiting for the QR code…';
    show(report.state, text);
    return true;
  };
  poll(step, SESSION_POLL_MS);
}

document.addEventListener('DOMContentLoaded', () => {
  const page = document.body.dataset.page;
  if (page === 'list') listPage();
  if (page === 'session') sessionPage();
});
