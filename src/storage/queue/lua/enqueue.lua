-- ARGV: prefix, now, max_pending, max_running, most delayed tasks to make
--       ready, when an idempotency key seen now expires, most bytes of
--       payload waiting, most finished tasks kept, oldest tasks looked at
--       to find finished ones to forget, then for each task its id, user,
--       kind, payload, max_attempts, created_at, run_at, idempotency key
--       ('' for none), fingerprint and traceparent ('' for none).
-- Answers, for each task in turn, {'created'}, {'replayed', task},
-- {'reused'}, {'full', pending}, {'full_bytes', bytes waiting} or
-- {'full_finished', finished kept} (too many, and none of the oldest
-- could be forgotten).
local now, max_pending, max_running = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local key_expires, max_bytes = ARGV[6], tonumber(ARGV[7])
local max_finished, scan = tonumber(ARGV[8]), tonumber(ARGV[9])
-- Tasks already due go first: they have the earlier run_at.
promote(now, max_running, tonumber(ARGV[5]))

-- What the tasks add to shared keys, written once per user at the end.
local pending_of, bytes_of, all_of, ready_of, tasks_of, due = {}, {}, {}, {}, {}, {}
local paused_of = {}
local users = {}

-- Forgets the oldest of a user's `kept` finished tasks until fewer than
-- `max_finished` are kept, looking at no more than `scan` of their oldest
-- tasks (so a user far past the bound gets there over several calls).
-- Answers how many are kept, and whether that is too many with none
-- forgotten.
local function keep_finished_below(user, kept)
  if kept < max_finished then return kept, false end
  local forgot = false
  for _, id in ipairs(redis.call('ZRANGE', all_key(user), 0, scan - 1)) do
    local status = redis.call('HGET', task_key(id), 'status')
    if FINAL[status] then
      forget(user, id, status)
      kept, forgot = kept - 1, true
      if kept < max_finished then break end
    end
  end
  return kept, kept >= max_finished and not forgot
end

local function enqueue(id, user, kind, payload, max_attempts, created, run_at, key, fingerprint, trace)
  local remembered = key ~= '' and (user_key(user) .. ':idempotency:' .. key)
  if remembered then
    local seen = redis.call('HMGET', remembered, 'task', 'fingerprint', 'expires')
    if seen[1] and tonumber(seen[3]) > now then
      if seen[2] ~= fingerprint then return { 'reused' } end
      local task = redis.call('HGETALL', task_key(seen[1]))
      if #task > 0 then return { 'replayed', task } end
    end
  end
  -- This very task, sent again after its answer was lost: answer it again.
  if redis.call('EXISTS', task_key(id)) == 1 then return { 'created' } end
  if not pending_of[user] then
    -- The user's counts, read once: waiting tasks and their bytes, and
    -- finished tasks, of which the oldest go first to make room.
    local c = redis.call('HMGET', user_key(user), 'queued', 'failed', 'waiting_bytes',
      'succeeded', 'dead', 'cancelled')
    for i = 1, 6 do c[i] = tonumber(c[i] or 0) end
    local finished, stuck = keep_finished_below(user, c[4] + c[5] + c[6])
    if stuck then return { 'full_finished', finished } end
    pending_of[user], bytes_of[user] = c[1] + c[2], c[3]
    paused_of[user] = is_paused(user)
    all_of[user], ready_of[user], tasks_of[user] = {}, {}, 0
    users[#users + 1] = user
  end
  if pending_of[user] >= max_pending then return { 'full', pending_of[user] } end
  if bytes_of[user] + #payload > max_bytes then return { 'full_bytes', bytes_of[user] } end
  pending_of[user] = pending_of[user] + 1
  bytes_of[user] = bytes_of[user] + #payload

  local fields = { 'HSET', task_key(id), 'id', id, 'user', user, 'kind', kind, 'payload', payload,
    'status', 'queued', 'attempts', 0, 'max_attempts', max_attempts, 'created_at', created,
    'run_at', run_at }
  if trace ~= '' then
    fields[#fields + 1] = 'traceparent'
    fields[#fields + 1] = trace
  end
  redis.call(unpack(fields))
  local all = all_of[user]
  all[#all + 1] = 0
  all[#all + 1] = id
  tasks_of[user] = tasks_of[user] + 1
  count_move(user, id, nil, 'queued', #payload)
  if tonumber(run_at) <= now then
    local ready = ready_of[user]
    ready[#ready + 1] = id
    if not paused_of[user] then
      due[#due + 1] = run_at
      due[#due + 1] = id
    end
  else
    redis.call('ZADD', DELAYED, run_at, id)
  end
  if remembered then
    redis.call('HSET', remembered, 'task', id, 'fingerprint', fingerprint, 'expires', key_expires)
    redis.call('ZADD', IDEMPOTENCY, key_expires, remembered)
  end
  return { 'created' }
end

local answers = {}
for i = 10, #ARGV, 10 do
  answers[#answers + 1] = enqueue(unpack(ARGV, i, i + 9))
end

-- Ready tasks go behind their users' ready tasks, in the order they came.
local readied = 0
for _, user in ipairs(users) do readied = readied + #ready_of[user] end
local sequence = redis.call('INCRBY', SEQUENCE, readied) - readied
for _, user in ipairs(users) do
  if tasks_of[user] > 0 then
    redis.call('ZADD', all_key(user), unpack(all_of[user]))
    redis.call('ZADD', TASKS, unpack(all_of[user]))
    redis.call('HINCRBY', user_key(user), 'tasks', tasks_of[user])
  end
  local ready = {}
  for _, id in ipairs(ready_of[user]) do
    sequence = sequence + 1
    ready[#ready + 1] = sequence
    ready[#ready + 1] = id
  end
  if #ready > 0 then redis.call('ZADD', ready_key(user), unpack(ready)) end
end
if #due > 0 then redis.call('ZADD', DUE, unpack(due)) end
apply_moves()
for _, user in ipairs(users) do activate(user, max_running) end
return answers
