-- ARGV: prefix, now, expires_at, max_running, most leases to take, error
-- Leases that lapsed count as failed attempts: each task runs again before
-- the rest of its queue (in the order they ran), or is dead if that was its
-- last attempt. Answers how many leases were taken back.
local now, max_running = ARGV[2], tonumber(ARGV[4])
local lapsed = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
local running = {}
for _, id in ipairs(lapsed) do
  redis.call('ZREM', LEASES, id)
  local t = redis.call('HMGET', task_key(id), 'status', 'fence')
  if t[1] == 'running' then running[#running + 1] = { id, t[2] } end
end
for _, held in ipairs(newest_first(running)) do
  local id = held[1]
  local t = redis.call('HMGET', task_key(id), 'user', 'attempts', 'max_attempts')
  local user = t[1]
  if tonumber(t[2]) < tonumber(t[3]) then
    redis.call('HSET', task_key(id), 'status', 'failed', 'error', ARGV[6], 'run_at', now)
    move(user, id, 'running', 'failed')
    push_front(user, id, now)
  else
    redis.call('HSET', task_key(id), 'error', ARGV[6])
    finalize(user, id, 'running', 'dead', now, ARGV[3])
  end
  activate(user, max_running)
end
return #lapsed
