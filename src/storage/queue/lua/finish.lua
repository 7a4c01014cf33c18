-- ARGV: prefix, id, fence, outcome ('succeeded', 'failed' or 'rejected'),
--       result or error, retry_at, now, expires_at, max_running
local id, fence, outcome = ARGV[2], ARGV[3], ARGV[4]
local t = leased(id, fence)
if not t then
  -- This lease's outcome, recorded already (a call sent again): answer the
  -- same. Any other lease is stale.
  local was = redis.call('HMGET', task_key(id), 'recorded_by', 'recorded_as')
  if was[1] == fence then return was[2] end
  return 'stale'
end
local user = t[3]
redis.call('ZREM', LEASES, id)
redis.call('HDEL', task_key(id), 'deadline')
local status
if outcome == 'succeeded' then
  status = 'succeeded'
  redis.call('HSET', task_key(id), 'result', ARGV[5])
  redis.call('HDEL', task_key(id), 'error')
  finalize(user, id, 'running', status, ARGV[7], ARGV[8])
else
  redis.call('HSET', task_key(id), 'error', ARGV[5])
  if outcome == 'failed' and tonumber(t[4]) < tonumber(t[5]) then
    status = 'failed'
    set_status(user, id, 'running', status)
    redis.call('HSET', task_key(id), 'run_at', ARGV[6])
    redis.call('ZADD', DELAYED, ARGV[6], id)
  else
    status = 'dead'
    finalize(user, id, 'running', status, ARGV[7], ARGV[8])
  end
end
redis.call('HSET', task_key(id), 'recorded_by', fence, 'recorded_as', status)
activate(user, tonumber(ARGV[9]))
return status
