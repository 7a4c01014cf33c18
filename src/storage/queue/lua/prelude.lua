-- Shared by every queue script (prepended to each). ARGV[1] is the key
-- prefix, a Redis Cluster hash tag such as "{tollgate}", so every key below
-- lives in one slot and each script is one atomic step on one node.
local P = ARGV[1]
local RING = P .. ':ring'         -- zset: users with ready work and room, by ticket
local TICKETS = P .. ':tickets'   -- counter behind the ring's tickets
local SEQUENCE = P .. ':sequence' -- counter behind the order of ready tasks
local FENCES = P .. ':fences'     -- counter behind every lease's fencing token
local DELAYED = P .. ':delayed'   -- zset: waiting tasks not yet due, by run_at
local LEASES = P .. ':leases'     -- zset: running tasks, by lease deadline
local EXPIRY = P .. ':expiry'     -- zset: finished tasks, by expires_at
local IDEMPOTENCY = P .. ':idempotency' -- zset: idempotency keys, by expiry
local DUE = P .. ':due'           -- zset: every user's ready tasks, by run_at
local WAITING_COUNT = P .. ':waiting' -- counter: queued and failed tasks
local WAITING_USERS = P .. ':waiting-users' -- zset: users by their waiting tasks

local function task_key(id) return P .. ':task:' .. id end
local function user_key(user, what) return P .. ':user:' .. user .. ':' .. what end
local function status_key(user, status) return user_key(user, 'status:' .. status) end
-- zset: a user's ready tasks, by the order they run in.
local function ready_key(user) return user_key(user, 'ready') end

local WAITING = { queued = true, failed = true }

-- Counts `delta` more waiting tasks for `user` (and for everyone).
local function count_waiting(user, delta)
  redis.call('INCRBY', WAITING_COUNT, delta)
  if tonumber(redis.call('ZINCRBY', WAITING_USERS, delta, user)) <= 0 then
    redis.call('ZREM', WAITING_USERS, user)
  end
end

-- Moves a task between status indexes and records its new status.
local function set_status(user, id, from, to)
  redis.call('ZREM', status_key(user, from), id)
  redis.call('ZADD', status_key(user, to), 0, id)
  redis.call('HSET', task_key(id), 'status', to)
  local delta = (WAITING[to] and 1 or 0) - (WAITING[from] and 1 or 0)
  if delta ~= 0 then count_waiting(user, delta) end
end

-- Whether a user running `running` tasks may start another.
local function may_run(running, max_running)
  return max_running == 0 or running < max_running
end

-- Puts a user at the back of the ring if it has ready work and room to run.
local function activate(user, max_running)
  if redis.call('ZSCORE', RING, user) then return end
  if redis.call('ZCARD', ready_key(user)) == 0 then return end
  if not may_run(redis.call('ZCARD', status_key(user, 'running')), max_running) then return end
  redis.call('ZADD', RING, redis.call('INCR', TICKETS), user)
end

-- Adds a task behind a user's ready tasks.
local function push_back(user, id)
  redis.call('ZADD', ready_key(user), redis.call('INCR', SEQUENCE), id)
  redis.call('ZADD', DUE, redis.call('HGET', task_key(id), 'run_at'), id)
end

-- Puts a task before all of a user's ready tasks.
local function push_front(user, id)
  local first = redis.call('ZRANGE', ready_key(user), 0, 0, 'WITHSCORES')[2]
  local score = first and (tonumber(first) - 1) or redis.call('INCR', SEQUENCE)
  redis.call('ZADD', ready_key(user), score, id)
  redis.call('ZADD', DUE, redis.call('HGET', task_key(id), 'run_at'), id)
end

-- Takes a task out of a user's ready tasks, wherever it stands.
local function unready(user, id)
  redis.call('ZREM', ready_key(user), id)
  redis.call('ZREM', DUE, id)
end

-- Makes up to `most` waiting tasks due by `now` ready, behind their users'
-- ready tasks, in run_at order.
local function promote(now, max_running, most)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'LIMIT', 0, most)) do
    redis.call('ZREM', DELAYED, id)
    local t = redis.call('HMGET', task_key(id), 'user', 'status')
    if t[1] and WAITING[t[2]] then
      push_back(t[1], id)
      activate(t[1], max_running)
    end
  end
end

-- Ends a task in a final state, kept until `expires`.
local function finalize(user, id, from, to, now, expires)
  set_status(user, id, from, to)
  redis.call('HSET', task_key(id), 'finished_at', now, 'expires_at', expires)
  redis.call('ZADD', EXPIRY, expires, id)
end

-- The task's fields if `fence` names its current lease, else nil.
local function leased(id, fence)
  local t = redis.call('HMGET', task_key(id), 'status', 'fence', 'user', 'attempts', 'max_attempts')
  if t[1] == 'running' and t[2] == fence then return t end
  return nil
end

-- Sorts (id, fence) pairs by fence, newest lease first: putting each in
-- front of its queue in this order leaves them in the order they ran.
local function newest_first(pairs)
  table.sort(pairs, function(a, b) return tonumber(a[2]) > tonumber(b[2]) end)
  return pairs
end
