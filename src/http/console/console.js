// The operators' console: the admin API in a page. Every value shown is
// set as text, never as markup. The token lives in this tab only.
'use strict';

const TOKEN_KEY = 'tollgate-admin-token';
const REFRESH_MS = 5000;
let token = sessionStorage.getItem(TOKEN_KEY);
let timer = null;

const $ = (selector) => document.querySelector(selector);

// An element with attributes (`on…` ones as listeners, `data` as dataset)
// and children (strings become text).
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (name === 'data') Object.assign(node.dataset, value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : String(child ?? '—'));
  }
  return node;
}

class Refused extends Error {}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${token}` } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const json = (response.headers.get('content-type') || '').includes('json');
  const answer = json ? await response.json() : null;
  if (response.status === 401) throw new Refused('the admin token was refused');
  if (!response.ok) throw new Error((answer && answer.detail) || response.statusText);
  return answer;
}

function say(message, failed = false) {
  const status = $('#status');
  status.textContent = message;
  status.classList.toggle('failed', failed);
}

// Runs an action, then shows what it did and refreshes the page's data.
async function act(what, action) {
  try {
    const message = await action();
    say(message || `${what}: done`);
  } catch (error) {
    if (error instanceof Refused) return close(error.message);
    say(`${what}: ${error.message}`, true);
  }
  await refresh();
}

function fill(table, rows) {
  const body = table.querySelector('tbody');
  body.replaceChildren(...rows);
}

function when(at) {
  return at ? new Date(at).toLocaleString() : '—';
}

async function showQueues() {
  const queues = await api('GET', '/admin/api/v1/queues');
  $('#figures').replaceChildren(
    el('dt', {}, 'tasks waiting'), el('dd', {}, queues.waiting),
    el('dt', {}, 'users with tasks waiting'), el('dd', {}, queues.users_waiting),
    el('dt', {}, 'longest due since'), el('dd', {}, when(queues.oldest_due_at)),
  );
  fill($('#pools'), Object.entries(queues.pools).map(([name, pool]) =>
    el('tr', { data: { pool: name } },
      el('td', {}, name), el('td', {}, pool.target), el('td', {}, pool.live),
      el('td', {}, pool.busy ?? '—'))));
  fill($('#busiest'), queues.users.map((load) =>
    el('tr', {}, el('td', { class: 'id' }, load.user_id), el('td', {}, load.waiting),
      el('td', {}, load.running))));
}

async function showDead() {
  const page = await api('GET', '/admin/api/v1/tasks?status=dead&limit=100');
  fill($('#dead-tasks'), page.items.map((task) =>
    el('tr', { data: { taskId: task.id } },
      el('td', { class: 'id' }, task.id),
      el('td', { class: 'id' }, task.user_id),
      el('td', {}, task.kind),
      el('td', {}, `${task.attempts}/${task.max_attempts}`),
      el('td', { class: 'error' }, task.error),
      el('td', {}, el('button', {
        class: 'retry',
        type: 'button',
        onclick: () => act('retry', async () => {
          await api('POST', `/admin/api/v1/tasks/${task.id}/retry`);
          return `task ${task.id} queued again`;
        }),
      }, 'Retry')))));
}

async function showUsers() {
  const query = $('#user-query').value.trim();
  const path = `/admin/api/v1/users?limit=50${query ? `&query=${encodeURIComponent(query)}` : ''}`;
  const page = await api('GET', path);
  fill($('#users-table'), page.items.map((user) => {
    const call = (what, method, suffix) => el('button', {
      type: 'button',
      class: what === 'Disable' ? 'danger' : '',
      onclick: () => act(`${what} ${user.username}`, async () => {
        await api(method, `/admin/api/v1/users/${user.id}${suffix}`);
      }),
    }, what);
    return el('tr', { data: { userId: user.id } },
      el('td', {}, user.username),
      el('td', {}, user.email),
      el('td', {}, when(user.created_at)),
      el('td', {}, user.sessions),
      el('td', user.disabled ? { class: 'disabled' } : {}, user.disabled ? 'disabled' : 'active'),
      el('td', {},
        user.disabled ? call('Enable', 'POST', '/enable') : call('Disable', 'POST', '/disable'),
        ' ', call('Sign out', 'DELETE', '/sessions'),
        ' ', call('Pause', 'POST', '/queue/pause'),
        ' ', call('Resume', 'POST', '/queue/resume')));
  }));
}

async function refresh() {
  try {
    await Promise.all([showQueues(), showDead(), showUsers()]);
  } catch (error) {
    if (error instanceof Refused) return close(error.message);
    say(`could not refresh: ${error.message}`, true);
  }
}

async function open() {
  try {
    await api('GET', '/admin/api/v1/users?limit=1');
  } catch (error) {
    return close(error instanceof Refused ? error.message : `the admin API: ${error.message}`);
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $('#gate').hidden = true;
  $('#console').hidden = false;
  $('#close').hidden = false;
  await refresh();
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

function close(message = '') {
  clearInterval(timer);
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $('#console').hidden = true;
  $('#close').hidden = true;
  $('#gate').hidden = false;
  $('#gate-message').textContent = message;
  $('#token').value = '';
}

$('#gate').addEventListener('submit', (event) => {
  event.preventDefault();
  token = $('#token').value;
  open();
});
$('#close').addEventListener('click', () => close());
$('#refresh').addEventListener('click', refresh);
$('#user-search').addEventListener('submit', (event) => {
  event.preventDefault();
  showUsers();
});
$('#retry-all-dead').addEventListener('click', () => act('retry all dead tasks', async () => {
  const bulk = await api('POST', '/admin/api/v1/tasks/retry', { status: 'dead' });
  return `${bulk.changed} of ${bulk.matched} dead tasks queued again`;
}));

if (token) open();
