-- ARGV: prefix, now, max_pending, max_running, most delayed tasks to make
--       ready, when an idempotency key seen now expires, then for each task
--       its id, user, kind, payload, max_attempts, created_at, run_at,
--       idempotency key ('' for none), fingerprint and traceparent ('' for
--       none).
-- Answers, for each task in turn, {'created'}, {'replayed', task},
-- {'reused'} or {'full', pending}.
local now, max_pending, max_running = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local key_expires = ARGV[6]
-- Tasks already due go first: they have the earlier run_at.
promote(now, max_running, tonumber(ARGV[5]))

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
  local pending = tonumber(redis.call('HGET', user_key(user), 'pending') or 0)
  if pending >= max_pending then return { 'full', pending } end

  local fields = { 'HSET', task_key(id), 'id', id, 'user', user, 'kind', kind, 'payload', payload,
    'status', 'queued', 'attempts', 0, 'max_attempts', max_attempts, 'created_at', created,
    'run_at', run_at }
  if trace ~= '' then
    fields[#fields + 1] = 'traceparent'
    fields[#fields + 1] = trace
  end
  redis.call(unpack(fields))
  redis.call('ZADD', all_key(user), 0, id)
  redis.call('HINCRBY', user_key(user), 'tasks', 1)
  move(user, nil, 'queued')
  if tonumber(run_at) <= now then
    push_back(user, id, run_at)
    activate(user, max_running)
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
for i = 7, #ARGV, 10 do
  answers[#answers + 1] = enqueue(unpack(ARGV, i, i + 9))
end
return answers
