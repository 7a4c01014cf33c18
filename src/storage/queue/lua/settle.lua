-- ARGV: prefix, now, when a task finished now expires, when a lease taken
--       now lapses, max_running, most tasks to lease, most delayed tasks to
--       make ready, call id, lease length in ms, then for each attempt to
--       record its task id, fence, outcome ('succeeded', 'failed' or
--       'rejected'), result or error, and retry_at.
-- Records how the attempts ended, then leases up to the number asked for:
-- one call where a worker would otherwise make two. Answers {finished,
-- leased}: for each attempt the status it left the task in ('stale' if its
-- lease was no longer current), and {fence, task} for each task leased.
-- Both halves are safe to repeat: an outcome recorded already is answered
-- again, and the call id makes a repeated call answer the leases it made
-- the first time that are still current, instead of leasing more.
local now, expires, deadline = ARGV[2], ARGV[3], ARGV[4]
local max_running, want = tonumber(ARGV[5]), tonumber(ARGV[6])
local call = P .. ':lease-call:' .. ARGV[8]

-- Records one attempt's outcome under its lease.
local function finish(id, fence, outcome, value, retry_at)
  local t = leased(id, fence)
  if not t then
    -- This lease's outcome, recorded already (a call sent again): answer
    -- the same. Any other lease is stale.
    local was = redis.call('HMGET', task_key(id), 'recorded_by', 'recorded_as')
    if was[1] == fence then return was[2] end
    return 'stale'
  end
  local user = t[3]
  redis.call('ZREM', LEASES, id)
  local status
  if outcome == 'succeeded' then
    status = 'succeeded'
    redis.call('HSET', task_key(id), 'status', status, 'result', value, 'finished_at', now,
      'expires_at', expires, 'recorded_by', fence, 'recorded_as', status)
    redis.call('HDEL', task_key(id), 'deadline', 'error')
  elseif outcome == 'failed' and tonumber(t[4]) < tonumber(t[5]) then
    status = 'failed'
    redis.call('HSET', task_key(id), 'status', status, 'error', value, 'run_at', retry_at,
      'recorded_by', fence, 'recorded_as', status)
    redis.call('HDEL', task_key(id), 'deadline')
    redis.call('ZADD', DELAYED, retry_at, id)
  else
    status = 'dead'
    redis.call('HSET', task_key(id), 'status', status, 'error', value, 'finished_at', now,
      'expires_at', expires, 'recorded_by', fence, 'recorded_as', status)
    redis.call('HDEL', task_key(id), 'deadline')
  end
  move(user, 'running', status)
  if status ~= 'failed' then redis.call('ZADD', EXPIRY, expires, id) end
  -- A user held back by max_running may run again.
  activate(user, max_running)
  return status
end

local finished = {}
for i = 10, #ARGV, 5 do
  finished[#finished + 1] = finish(unpack(ARGV, i, i + 4))
end

local granted = {}
if want > 0 then
  if redis.call('EXISTS', call) == 1 then
    for _, held in ipairs(redis.call('LRANGE', call, 0, -1)) do
      local id, fence = string.match(held, '^(.-) (%d+)$')
      if leased(id, fence) then
        granted[#granted + 1] = { tonumber(fence), redis.call('HGETALL', task_key(id)) }
      end
    end
    return { finished, granted }
  end

  promote(now, max_running, tonumber(ARGV[7]))
  -- Round robin: the user at the head of the ring gives its first ready
  -- task and goes to the back, or leaves the ring when it has no more to
  -- give or no room to run it.
  while #granted < want do
    local user = redis.call('ZRANGE', RING, 0, 0)[1]
    if not user then break end
    local id = may_run(user, max_running) and redis.call('ZRANGE', ready_key(user), 0, 0)[1]
    if id then
      unready(user, id)
      local t = redis.call('HMGET', task_key(id), 'status', 'attempts')
      if WAITING[t[1]] then
        local fence = redis.call('INCR', FENCES)
        redis.call('HSET', task_key(id), 'status', 'running', 'attempts', tonumber(t[2]) + 1,
          'started_at', now, 'fence', fence, 'deadline', deadline)
        move(user, t[1], 'running')
        redis.call('ZADD', LEASES, deadline, id)
        redis.call('RPUSH', call, id .. ' ' .. fence)
        granted[#granted + 1] = { fence, redis.call('HGETALL', task_key(id)) }
      end
    end
    if id and redis.call('ZCARD', ready_key(user)) > 0 and may_run(user, max_running) then
      redis.call('ZADD', RING, redis.call('INCR', TICKETS), user)
    else
      redis.call('ZREM', RING, user)
    end
  end
  if #granted > 0 then redis.call('PEXPIRE', call, ARGV[9]) end
end
return { finished, granted }
