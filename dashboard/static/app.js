// tokenhub dashboard: the Keys and Plans admin APIs (/v1/keys, /v1/plans) and
// the routes' health (/admin/upstreams) in one page. Plain JavaScript, no build step.
//
// Rules this file keeps:
//   - Text from the API reaches the page only through textContent, text nodes
//     and dataset; nothing is parsed as markup, so a key named "<img …>" is
//     text. (dashboard_test.go refuses the HTML-parsing DOM calls.)
//   - The admin key lives in this tab's sessionStorage and nowhere else; it is
//     sent only as "Authorization: Bearer" to this origin.
//   - A key's secret (from create and rotate) is kept only in the secret panel
//     and cleared when the panel is dismissed; nothing stores it.
'use strict';

(() => {
  const storageKey = 'tokenhub.adminKey';
  const maxRows = 200; // rows drawn at once; the filter narrows the rest
  const usageConcurrency = 4; // parallel GET /v1/keys/{id}/usage

  const $ = (id) => document.getElementById(id);

  const state = {
    keys: [],
    plans: [],
    usage: new Map(), // key id -> {u} | {err} | null while loading
    usageCells: new Map(), // key id -> cells of the drawn row
    usageQueue: [],
    usageActive: 0,
    session: 0, // bumped on sign-out, so answers to an old session are dropped
    inflight: 0, // API calls under way
    editingPlan: null,
  };

  // ---- API -----------------------------------------------------------------

  class APIError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code || '';
    }
  }

  // api calls the admin API and returns the decoded answer, or throws an
  // APIError whose message is readable as it stands. While calls are under
  // way the page is aria-busy (tests wait on it too).
  async function api(method, path, body) {
    state.inflight++;
    document.body.setAttribute('aria-busy', 'true');
    try {
      return await call(method, path, body);
    } finally {
      if (--state.inflight === 0) document.body.removeAttribute('aria-busy');
    }
  }

  async function call(method, path, body) {
    const init = {
      method,
      headers: { Authorization: 'Bearer ' + (sessionStorage.getItem(storageKey) || '') },
      cache: 'no-store',
      credentials: 'omit',
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new APIError(0, 'Cannot reach tokenhub (' + e.message + ').');
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = null;
    }
    if (!res.ok) {
      // OpenAI-shaped: {"error":{"message","type","param","code"}}.
      const e = data && typeof data.error === 'object' && data.error ? data.error : {};
      const message = typeof e.message === 'string' && e.message
        ? e.message
        : 'HTTP ' + res.status + ' ' + (res.statusText || 'error') + '.';
      throw new APIError(res.status, message, typeof e.code === 'string' ? e.code : '');
    }
    if (data === null) {
      throw new APIError(res.status, 'tokenhub answered with something that is not JSON.');
    }
    return data;
  }

  const keyPath = (id) => '/v1/keys/' + encodeURIComponent(id);
  const planPath = (name) => '/v1/plans/' + encodeURIComponent(name);

  // ---- Messages ------------------------------------------------------------

  function describe(err) {
    if (!(err instanceof APIError)) return String(err && err.message ? err.message : err);
    return err.code ? err.message + ' (' + err.code + ')' : err.message;
  }

  function showError(err) {
    if (err instanceof APIError && (err.status === 401 || err.code === 'admin_key_required')) {
      // The admin key is wrong or was changed on the server: back to sign-in.
      signOut('The admin key was refused: ' + describe(err));
      return;
    }
    $('notice').hidden = true;
    $('error').textContent = describe(err);
    $('error').hidden = false;
  }

  function showNotice(text) {
    $('error').hidden = true;
    $('notice').textContent = text;
    $('notice').hidden = false;
  }

  function clearMessages() {
    $('error').hidden = true;
    $('notice').hidden = true;
  }

  // busy disables button while fn runs, so a double click sends one request.
  async function busy(button, fn) {
    button.disabled = true;
    try {
      await fn();
    } catch (e) {
      showError(e);
    } finally {
      button.disabled = false;
    }
  }

  // ---- Formatting ----------------------------------------------------------

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'dataset') Object.assign(e.dataset, v);
      else e[k] = v; // only className, textContent, title, type: never HTML
    }
    e.append(...children); // strings become text nodes
    return e;
  }

  const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  const when = (unix) => (unix == null ? '—' : dateTime.format(new Date(unix * 1000)));
  const count = (n) => Number(n || 0).toLocaleString();

  // usd formats a dollar amount for reading: cents when it is that large,
  // else up to micro-dollars. The API's exact value goes in a title.
  function usd(n) {
    if (n == null) return '—';
    const v = Number(n);
    if (v === 0) return '$0';
    if (v >= 0.01) return '$' + v.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    const s = v.toFixed(6).replace(/0+$/, '').replace(/\.$/, '');
    return s === '0' ? '< $0.000001' : '$' + s;
  }

  const limit = (n) => (Number(n) === 0 ? 'no limit' : count(n));
  const usdLimit = (n) => (Number(n) === 0 ? 'no limit' : '$' + String(n));

  function keyStatus(k, now) {
    if (k.revoked_at != null) return 'revoked';
    if (k.expires_at != null && k.expires_at * 1000 <= now) return 'expired';
    return 'active';
  }

  // ---- Sign in and out -----------------------------------------------------

  function showSignIn(message) {
    $('app').hidden = true;
    $('signout').hidden = true;
    $('signin').hidden = false;
    $('signin-error').textContent = message || '';
    $('signin-error').hidden = !message;
    $('admin-key').focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $('admin-key');
    const key = input.value.trim();
    if (!key) return;
    sessionStorage.setItem(storageKey, key);
    input.value = '';
    await busy(event.submitter || $('signin-form').querySelector('button'), async () => {
      try {
        await api('GET', '/v1/plans'); // proves the key before showing anything
      } catch (e) {
        sessionStorage.removeItem(storageKey);
        showSignIn(e instanceof APIError && (e.status === 401 || e.status === 403)
          ? 'That is not the admin key: ' + describe(e)
          : describe(e));
        return;
      }
      await start();
    });
  }

  function signOut(message) {
    sessionStorage.clear();
    state.session++;
    answerConfirm(false);
    state.keys = [];
    state.plans = [];
    state.usage = new Map();
    state.usageCells = new Map();
    state.usageQueue = [];
    hideSecret();
    closePlanForm();
    $('keys-body').replaceChildren();
    $('plans-body').replaceChildren();
    $('routes-body').replaceChildren();
    $('create-plan').replaceChildren();
    clearMessages();
    showSignIn(typeof message === 'string' ? message : '');
  }

  async function start() {
    $('signin').hidden = true;
    $('app').hidden = false;
    $('signout').hidden = false;
    await reload();
  }

  async function reload() {
    state.usage = new Map();
    state.usageQueue = [];
    await Promise.all([loadPlans(), loadKeys(), loadRoutes()]);
  }

  // ---- Secret panel --------------------------------------------------------

  function showSecret(title, k) {
    $('secret-title').textContent = title;
    $('secret-value').textContent = k.key;
    $('secret-panel').dataset.keyId = k.id;
    $('secret-copied').hidden = true;
    $('secret-panel').hidden = false;
    $('secret-panel').scrollIntoView({ block: 'nearest' });
  }

  function hideSecret() {
    $('secret-value').textContent = '';
    delete $('secret-panel').dataset.keyId;
    $('secret-panel').hidden = true;
  }

  async function copySecret() {
    const code = $('secret-value');
    const note = $('secret-copied');
    try {
      await navigator.clipboard.writeText(code.textContent);
      note.textContent = 'Copied.';
    } catch (e) {
      // The Clipboard API needs a secure context (https or localhost): select
      // the key so that Ctrl+C copies it.
      window.getSelection().selectAllChildren(code);
      note.textContent = 'Selected: press Ctrl+C (⌘C) to copy.';
    }
    note.hidden = false;
  }

  // ---- Confirmation --------------------------------------------------------

  // confirmAction asks in an in-page dialog (not window.confirm, which blocks
  // the page and cannot be styled) and resolves true when confirmed.
  //
  // The answer comes from the buttons and Escape, not from the dialog's
  // "close" event: that event is queued, so it can arrive after the next
  // confirmation has opened and would answer that one too.
  let settleConfirm = null;

  function confirmAction(text, okLabel) {
    answerConfirm(false); // never two questions at once
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = okLabel;
    $('confirm').showModal();
    $('confirm-cancel').focus();
    return new Promise((resolve) => {
      settleConfirm = resolve;
    });
  }

  function answerConfirm(ok) {
    const settle = settleConfirm;
    settleConfirm = null;
    if ($('confirm').open) $('confirm').close();
    if (settle) settle(ok);
  }

  // ---- Keys ----------------------------------------------------------------

  async function loadKeys() {
    const session = state.session;
    const list = await api('GET', '/v1/keys');
    if (session !== state.session) return;
    state.keys = (list.data || []).slice().sort((a, b) => b.created_at - a.created_at);
    renderKeys();
  }

  function renderKeys() {
    const q = $('search').value.trim().toLowerCase();
    const showRevoked = $('show-revoked').checked;
    const now = Date.now();
    const matches = state.keys.filter((k) => (showRevoked || k.revoked_at == null) &&
      (!q || [k.name, k.id, k.plan].some((s) => String(s || '').toLowerCase().includes(q))));
    const shown = matches.slice(0, maxRows);

    state.usageCells = new Map();
    const rows = shown.map((k) => {
      const status = keyStatus(k, now);
      const cells = {
        requests: el('td', { className: 'num' }),
        tokens: el('td', { className: 'num' }),
        spend: el('td', { className: 'num' }),
      };
      state.usageCells.set(k.id, cells);
      const actions = el('td', { className: 'actions' });
      if (status !== 'revoked') {
        actions.append(
          el('button', { type: 'button', className: 'secondary', textContent: 'Rotate', dataset: { action: 'rotate', id: k.id } }),
          el('button', { type: 'button', className: 'danger', textContent: 'Revoke', dataset: { action: 'revoke', id: k.id } }),
        );
      }
      const row = el('tr', { className: status, dataset: { id: k.id } },
        el('td', { textContent: k.name || '(unnamed)', className: k.name ? '' : 'muted' }),
        el('td', { className: 'mono', textContent: k.id }),
        el('td', { textContent: k.plan }),
        el('td', { className: 'mono', textContent: '…' + k.last4 }),
        el('td', { textContent: when(k.created_at) }),
        el('td', { textContent: k.expires_at == null ? 'never' : when(k.expires_at) }),
        el('td', {}, el('span', { className: 'badge ' + status, textContent: status })),
        cells.requests, cells.tokens, cells.spend, actions);
      return row;
    });
    if (rows.length === 0) {
      rows.push(el('tr', {}, el('td', { colSpan: 11, className: 'muted', textContent:
        state.keys.length === 0 ? 'No keys yet.' : 'No key matches.' })));
    }
    $('keys-body').replaceChildren(...rows);
    $('keys-count').textContent = matches.length > shown.length
      ? 'showing ' + shown.length + ' of ' + matches.length + ': narrow the filter'
      : matches.length + (matches.length === 1 ? ' key' : ' keys');

    for (const k of shown) {
      fillUsage(k.id);
      wantUsage(k.id);
    }
  }

  // Usage comes one request per key (GET /v1/keys/{id}/usage), only for the
  // rows drawn, a few at a time, remembered until Refresh.
  function wantUsage(id) {
    if (state.usage.has(id)) return;
    state.usage.set(id, null);
    state.usageQueue.push(id);
    pumpUsage();
  }

  function pumpUsage() {
    while (state.usageActive < usageConcurrency && state.usageQueue.length > 0) {
      const id = state.usageQueue.shift();
      const session = state.session;
      const usage = state.usage;
      state.usageActive++;
      api('GET', keyPath(id) + '/usage')
        .then((u) => usage.set(id, { u }), (err) => usage.set(id, { err }))
        .finally(() => {
          state.usageActive--;
          if (session === state.session && usage === state.usage) fillUsage(id);
          pumpUsage();
        });
    }
  }

  function fillUsage(id) {
    const cells = state.usageCells.get(id);
    const got = state.usage.get(id);
    if (!cells) return;
    if (!got) {
      for (const c of Object.values(cells)) c.textContent = '…';
      return;
    }
    if (got.err) {
      for (const c of Object.values(cells)) {
        c.textContent = '!';
        c.title = describe(got.err);
      }
      return;
    }
    const u = got.u;
    cells.requests.textContent = count(u.requests);
    cells.tokens.textContent = count(Number(u.prompt_tokens) + Number(u.completion_tokens));
    cells.tokens.title = tokensTitle(u);
    cells.spend.textContent = u.monthly_usd == null ? usd(u.spend_usd) : usd(u.spend_usd) + ' of ' + usd(u.monthly_usd);
    cells.spend.title = 'spent $' + u.spend_usd + ', reserved $' + u.reserved_usd +
      (u.remaining_usd == null ? '' : ', remaining $' + u.remaining_usd) + ' (' + u.month + ')';
  }

  // tokensTitle spells out a usage's tokens: the prompt's cache reads and
  // writes, billed at their own prices, when there are any.
  function tokensTitle(u) {
    const cache = [];
    if (Number(u.cached_tokens) > 0) cache.push(count(u.cached_tokens) + ' read from cache');
    if (Number(u.cache_write_tokens) > 0) cache.push(count(u.cache_write_tokens) + ' written to cache');
    return count(u.prompt_tokens) + ' prompt' + (cache.length ? ' (' + cache.join(', ') + ')' : '') +
      ' + ' + count(u.completion_tokens) + ' completion';
  }

  async function createKey(event) {
    event.preventDefault();
    clearMessages();
    const body = { name: $('create-name').value.trim(), plan: $('create-plan').value };
    const day = $('create-expires').value; // yyyy-mm-dd
    if (day) {
      // The key works through the chosen day: it expires at its last second,
      // local time.
      const [y, m, d] = day.split('-').map(Number);
      const end = new Date(y, m - 1, d, 23, 59, 59);
      if (end.getTime() <= Date.now()) {
        showError(new Error('The expiry date is in the past.'));
        return;
      }
      body.expires_at = Math.floor(end.getTime() / 1000);
    }
    await busy($('create-submit'), async () => {
      const k = await api('POST', '/v1/keys', body);
      $('create-form').reset();
      selectDefaultPlan();
      showSecret('New key “' + (k.name || k.id) + '” (' + k.id + ', plan ' + k.plan + ')', k);
      await loadKeys();
    });
  }

  async function keyAction(event) {
    const button = event.target.closest('button[data-action]');
    if (!button) return;
    const k = state.keys.find((x) => x.id === button.dataset.id);
    if (!k) return;
    const label = '“' + (k.name || k.id) + '” (' + k.id + ')';
    clearMessages();
    if (button.dataset.action === 'revoke') {
      if (!(await confirmAction('Revoke key ' + label + '? Requests with it are refused at once. This cannot be undone.', 'Revoke'))) return;
      await busy(button, async () => {
        await api('DELETE', keyPath(k.id));
        if ($('secret-panel').dataset.keyId === k.id) hideSecret();
        showNotice('Key ' + label + ' revoked.');
        await loadKeys();
      });
    } else if (button.dataset.action === 'rotate') {
      if (!(await confirmAction('Rotate key ' + label + '? Its current secret stops working at once; the new one is shown once.', 'Rotate'))) return;
      await busy(button, async () => {
        const rotated = await api('POST', keyPath(k.id) + '/rotate');
        showSecret('New secret for ' + label, rotated);
        await loadKeys();
      });
    }
  }

  // ---- Plans ---------------------------------------------------------------

  async function loadPlans() {
    const session = state.session;
    const list = await api('GET', '/v1/plans');
    if (session !== state.session) return;
    state.plans = (list.data || []).slice().sort((a, b) => a.name.localeCompare(b.name));
    renderPlans();
  }

  function renderPlans() {
    const rows = state.plans.map((p) => el('tr', { dataset: { name: p.name } },
      el('td', { textContent: p.name }),
      el('td', { className: 'mono', textContent: p.models.length ? p.models.join(', ') : '(none: every model refused)' }),
      el('td', { className: 'num', textContent: limit(p.rpm) }),
      el('td', { className: 'num', textContent: limit(p.tpm) }),
      el('td', { className: 'num', textContent: usdLimit(p.max_request_usd) }),
      el('td', { className: 'num', textContent: usdLimit(p.monthly_usd) }),
      el('td', { className: 'actions' },
        el('button', { type: 'button', className: 'secondary', textContent: 'Edit', dataset: { action: 'edit', name: p.name } }))));
    if (rows.length === 0) {
      rows.push(el('tr', {}, el('td', { colSpan: 7, className: 'muted', textContent: 'No plans.' })));
    }
    $('plans-body').replaceChildren(...rows);

    const select = $('create-plan');
    const chosen = select.value;
    select.replaceChildren(...state.plans.map((p) => el('option', { value: p.name, textContent: p.name })));
    if (state.plans.some((p) => p.name === chosen)) select.value = chosen;
    else selectDefaultPlan();
  }

  function selectDefaultPlan() {
    const select = $('create-plan');
    if (state.plans.some((p) => p.name === 'default')) select.value = 'default';
  }

  function planAction(event) {
    const button = event.target.closest('button[data-action="edit"]');
    if (!button) return;
    const p = state.plans.find((x) => x.name === button.dataset.name);
    if (!p) return;
    clearMessages();
    state.editingPlan = p.name;
    $('plan-form-title').textContent = 'Edit plan “' + p.name + '”';
    $('plan-models').value = p.models.join(', ');
    $('plan-rpm').value = String(p.rpm);
    $('plan-tpm').value = String(p.tpm);
    // The API's dollar amounts are exact decimals with at most 6 places, which
    // String() of the parsed number reproduces digit for digit.
    $('plan-max-request').value = String(p.max_request_usd);
    $('plan-monthly').value = String(p.monthly_usd);
    $('plan-form').hidden = false;
    $('plan-models').focus();
  }

  function closePlanForm() {
    state.editingPlan = null;
    $('plan-form').hidden = true;
  }

  // wholeNumber and dollars read form fields, throwing a message that names
  // the field; dollars stay strings so that no float ever carries money.
  function wholeNumber(id, label) {
    const s = $(id).value.trim();
    if (!/^\d+$/.test(s)) throw new Error(label + ' must be a whole number (0 means no limit).');
    return Number(s);
  }

  function dollars(id, label) {
    const s = $(id).value.trim().replace(/^\$/, '');
    if (!/^(\d+(\.\d{0,6})?|\.\d{1,6})$/.test(s)) {
      throw new Error(label + ' must be an amount of dollars with at most 6 decimals, such as 10 or 0.5 (0 means no limit).');
    }
    return s;
  }

  async function savePlan(event) {
    event.preventDefault();
    clearMessages();
    const name = state.editingPlan;
    if (!name) return;
    let body;
    try {
      body = {
        name,
        models: $('plan-models').value.split(/[\s,]+/).filter(Boolean),
        rpm: wholeNumber('plan-rpm', 'Requests per minute'),
        tpm: wholeNumber('plan-tpm', 'Tokens per minute'),
        max_request_usd: dollars('plan-max-request', 'Max USD per request'),
        monthly_usd: dollars('plan-monthly', 'USD per month'),
      };
    } catch (e) {
      showError(e);
      return;
    }
    await busy($('plan-save'), async () => {
      await api('PUT', planPath(name), body);
      closePlanForm();
      showNotice('Plan “' + name + '” saved.');
      await loadPlans();
      state.usage = new Map(); // the monthly cap shown with each key's spend may have changed
      renderKeys();
    });
  }

  // ---- Routes --------------------------------------------------------------

  async function loadRoutes() {
    const session = state.session;
    const list = await api('GET', '/admin/upstreams');
    if (session !== state.session) return;
    renderRoutes(list.data || []);
  }

  const latency = (ms) => (ms == null ? '—'
    : (ms < 10 ? ms.toFixed(1) : Math.round(ms).toLocaleString()) + ' ms');

  const stateLabels = { healthy: 'healthy', ejected: 'ejected', cooling_down: 'cooling down', half_open: 'trial' };

  function renderRoutes(routes) {
    const rows = routes.map((r) => el('tr', { dataset: { model: r.model, upstream: r.upstream } },
      el('td', { className: 'mono', textContent: r.model }),
      el('td', { textContent: r.upstream }),
      el('td', { className: 'route-' + (stateLabels[r.state] ? r.state : 'unknown'), textContent: stateLabels[r.state] || String(r.state) }),
      el('td', { className: 'num', textContent: latency(r.latency_ms) }),
      el('td', { className: 'num', textContent: count(r.in_flight) }),
      el('td', { className: 'num', textContent: count(r.ejections) }),
      el('td', { textContent: when(r.until) })));
    if (rows.length === 0) {
      rows.push(el('tr', {}, el('td', { colSpan: 7, className: 'muted', textContent: 'No routes.' })));
    }
    $('routes-body').replaceChildren(...rows);
  }

  // ---- Wiring --------------------------------------------------------------

  function init() {
    $('signin-form').addEventListener('submit', signIn);
    $('signout').addEventListener('click', () => signOut());
    $('create-form').addEventListener('submit', createKey);
    $('search').addEventListener('input', renderKeys);
    $('show-revoked').addEventListener('change', renderKeys);
    $('refresh').addEventListener('click', (e) => busy(e.currentTarget, async () => {
      clearMessages();
      await reload();
    }));
    $('keys-body').addEventListener('click', keyAction);
    $('plans-body').addEventListener('click', planAction);
    $('plan-form').addEventListener('submit', savePlan);
    $('plan-cancel').addEventListener('click', closePlanForm);
    $('secret-copy').addEventListener('click', copySecret);
    $('secret-done').addEventListener('click', hideSecret);
    $('confirm-ok').addEventListener('click', () => answerConfirm(true));
    $('confirm-cancel').addEventListener('click', () => answerConfirm(false));
    $('confirm').addEventListener('cancel', () => answerConfirm(false)); // Escape

    const today = new Date();
    $('create-expires').min = [today.getFullYear(), String(today.getMonth() + 1).padStart(2, '0'),
      String(today.getDate()).padStart(2, '0')].join('-');

    if (sessionStorage.getItem(storageKey)) {
      start().catch(showError);
    } else {
      showSignIn();
    }
  }

  init();
})();
