-- ARGV: prefix, id, user, kind, payload, max_attempts, created_at, run_at,
--       now, max_pending, max_running, idempotency key ('' for none),
--       fingerprint, key expiry, most delayed tasks to make ready,
--       traceparent ('' for none)
local id, user, run_at, now = ARGV[2], ARGV[3], tonumber(ARGV[8]), tonumber(ARGV[9])
local max_running = tonumber(ARGV[11])
local remembered
if ARGV[12] ~= '' then
  remembered = user_key(user, 'idempotency:' .. ARGV[12])
  local seen = redis.call('HMGET', remembered, 'task', 'fingerprint', 'expires')
  if seen[1] and tonumber(seen[3]) > now then
    if seen[2] ~= ARGV[13] then return { 'reused' } end
    local task = redis.call('HGETALL', task_key(seen[1]))
    if #task > 0 then return { 'replayed', task } end
  end
end
-- This very call, sent again after its answer was lost: answer it again.
if redis.call('EXISTS', task_key(id)) == 1 then
  return { 'created', redis.call('HGETALL', task_key(id)) }
end
local pending = redis.call('ZCARD', status_key(user, 'queued')) + redis.call('ZCARD', status_key(user, 'failed'))
if pending >= tonumber(ARGV[10]) then return { 'full', pending } end

-- Tasks already due go first: they have the earlier run_at.
promote(now, max_running, tonumber(ARGV[15]))
redis.call('HSET', task_key(id), 'id', id, 'user', user, 'kind', ARGV[4], 'payload', ARGV[5],
  'status', 'queued', 'attempts', 0, 'max_attempts', ARGV[6], 'created_at', ARGV[7], 'run_at', ARGV[8])
if ARGV[16] ~= '' then redis.call('HSET', task_key(id), 'traceparent', ARGV[16]) end
redis.call('ZADD', user_key(user, 'all'), 0, id)
redis.call('ZADD', status_key(user, 'queued'), 0, id)
count_waiting(user, 1)
if run_at <= now then
  push_back(user, id)
  activate(user, max_running)
else
  redis.call('ZADD', DELAYED, run_at, id)
end
if remembered then
  redis.call('HSET', remembered, 'task', id, 'fingerprint', ARGV[13], 'expires', ARGV[14])
  redis.call('ZADD', IDEMPOTENCY, ARGV[14], remembered)
end
return { 'created', redis.call('HGETALL', task_key(id)) }
