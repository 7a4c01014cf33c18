-- ARGV: prefix, now, deadline, max_running, most tasks to lease, most
--       delayed tasks to make ready, call id, lease length in ms
-- Answers {fence, task} for each task leased. The call id makes the call
-- safe to repeat: sent again, it answers the leases it made the first time
-- that are still current, instead of leasing more.
local now, deadline = ARGV[2], ARGV[3]
local max_running, want = tonumber(ARGV[4]), tonumber(ARGV[5])
local call = P .. ':lease-call:' .. ARGV[7]

local granted = {}
if redis.call('EXISTS', call) == 1 then
  for _, held in ipairs(redis.call('LRANGE', call, 0, -1)) do
    local id, fence = string.match(held, '^(.-) (%d+)$')
    if leased(id, fence) then
      granted[#granted + 1] = { tonumber(fence), redis.call('HGETALL', task_key(id)) }
    end
  end
  return granted
end

promote(now, max_running, tonumber(ARGV[6]))

-- Round robin: the user at the head of the ring gives its first ready task
-- and goes to the back, or leaves the ring when it has no more to give.
while #granted < want do
  local user = redis.call('ZRANGE', RING, 0, 0)[1]
  if not user then break end
  redis.call('ZREM', RING, user)
  if may_run(redis.call('ZCARD', status_key(user, 'running')), max_running) then
    local id = redis.call('ZRANGE', ready_key(user), 0, 0)[1]
    if id then unready(user, id) end
    local status = id and redis.call('HGET', task_key(id), 'status')
    if status and WAITING[status] then
      local fence = redis.call('INCR', FENCES)
      set_status(user, id, status, 'running')
      redis.call('HINCRBY', task_key(id), 'attempts', 1)
      redis.call('HSET', task_key(id), 'started_at', now, 'fence', fence, 'deadline', deadline)
      redis.call('ZADD', LEASES, deadline, id)
      redis.call('RPUSH', call, id .. ' ' .. fence)
      granted[#granted + 1] = { fence, redis.call('HGETALL', task_key(id)) }
    end
  end
  activate(user, max_running)
end
if #granted > 0 then redis.call('PEXPIRE', call, ARGV[8]) end
return granted
