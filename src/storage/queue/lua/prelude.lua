-- Shared by every queue script (prepended to each). ARGV[1] is the key
-- prefix, a Redis Cluster hash tag such as "{tollgate}", so every key below
-- lives in one slot and each script is one atomic step on one node.
--
-- Sorted-set writes are what a script spends its time on, so a task's
-- state is kept in its own hash and counted in its user's, and only what
-- must be found in order is indexed: a user's ready tasks, the ring of
-- users, delayed tasks, leases, expiries.
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
local WAITING_USERS = P .. ':waiting-users' -- set: users with any waiting
local HELD = P .. ':held'         -- set: users kept out of the ring by max_running
local FRESH = P .. ':fresh'       -- zset: users that joined the ring with nothing running
local PAUSED = P .. ':paused'     -- set: users an operator paused: kept out of the ring
local TASKS = P .. ':tasks'       -- zset: every task id, all scores 0 (by id: creation order)
local KIND_RUNNING = P .. ':kind-running' -- hash: running tasks by kind
local PARKED_KINDS = P .. ':parked-kinds' -- set: kinds with tasks parked by their limits

local function task_key(id) return P .. ':task:' .. id end
-- hash: a user's tasks counted by status, and `tasks` (all of them).
local function user_key(user) return P .. ':user:' .. user end
-- zset: a user's tasks, all scores 0 so that they sort by id (UUID v7:
-- creation order).
local function all_key(user) return user_key(user) .. ':all' end
-- zset: a user's ready tasks, by the order they run in.
local function ready_key(user) return user_key(user) .. ':ready' end
-- zset: ready tasks of `kind` set aside while the kind has no room under
-- its limits, by the score they had in their user's ready tasks.
local function parked_key(kind) return P .. ':parked:' .. kind end
-- zset: the starts of `kind` in the last second, by when (ms).
local function kind_starts_key(kind) return P .. ':kind-starts:' .. kind end

-- Whether an operator paused the user: their ready tasks are then kept
-- out of DUE too, so that the figures do not count them as overdue.
local function is_paused(user) return redis.call('SISMEMBER', PAUSED, user) == 1 end

local WAITING = { queued = true, failed = true }

-- Status changes, counted per user as a script makes them and written
-- with `apply_moves`: one HINCRBY per user and status, however many tasks
-- moved. Users are kept in the order they were first counted. The bytes
-- of payload a user has waiting move with them, in `waiting_bytes`.
local moved, moved_users = {}, {}
-- Tasks starting or ending a run, counted per kind, also until then.
local kinds_moved = {}

-- Counts task `id` of `user`'s moving from status `from` (nil for a new
-- one) to `to`, until `apply_moves`. `size` is its payload's length, read
-- from the task when not given and the move starts or ends its waiting.
-- A move that starts or ends a run counts for the task's kind: `kind` if
-- given, read from the task if nil, not at all if false. A run ends
-- counted only if its start was (its lease's fence is in `counted`): one
-- started by a version that did not count kinds is not taken off.
local function count_move(user, id, from, to, size, kind)
  if (from == 'running') ~= (to == 'running') and kind ~= false then
    if not kind then
      local t = redis.call('HMGET', task_key(id), 'kind', 'counted', 'fence')
      kind = (to == 'running' or t[2] == t[3]) and t[1]
    end
    if kind then
      kinds_moved[kind] = (kinds_moved[kind] or 0) + (to == 'running' and 1 or -1)
    end
  end
  local counts = moved[user]
  if not counts then
    counts = {}
    moved[user] = counts
    moved_users[#moved_users + 1] = user
  end
  if from then counts[from] = (counts[from] or 0) - 1 end
  counts[to] = (counts[to] or 0) + 1
  local was, is = from and WAITING[from], WAITING[to]
  if was ~= is then
    size = size or redis.call('HSTRLEN', task_key(id), 'payload')
    counts.waiting_bytes = (counts.waiting_bytes or 0) + (is and size or -size)
  end
end

-- A user's waiting tasks (queued and failed).
local function pending(user)
  local counts = redis.call('HMGET', user_key(user), 'queued', 'failed')
  return tonumber(counts[1] or 0) + tonumber(counts[2] or 0)
end

local FINAL = { succeeded = true, dead = true, cancelled = true }

-- Forgets a finished task of `user`'s in `status`: its record, indexes and
-- count. Answers the user's tasks left.
local function forget(user, id, status)
  redis.call('ZREM', EXPIRY, id)
  redis.call('ZREM', TASKS, id)
  redis.call('ZREM', all_key(user), id)
  redis.call('HINCRBY', user_key(user), status, -1)
  redis.call('DEL', task_key(id))
  return redis.call('HINCRBY', user_key(user), 'tasks', -1)
end

-- Writes the counted moves; answers the users they were of, in order.
-- Anything that reads a user's counts runs after this.
local function apply_moves()
  local users, waiting = moved_users, 0
  for _, user in ipairs(users) do
    local delta, left = 0, 0
    for status, n in pairs(moved[user]) do
      if n ~= 0 then
        local count = redis.call('HINCRBY', user_key(user), status, n)
        if WAITING[status] then
          delta = delta + n
          left = left + count
        end
      end
    end
    -- Whether the user has any waiting changes only when the waiting counts
    -- it moved reach or leave 0; only then is the rest of them read.
    if delta ~= 0 then
      waiting = waiting + delta
      if left == 0 or left == delta then
        local now_waiting = pending(user)
        if now_waiting == 0 then redis.call('SREM', WAITING_USERS, user) end
        if now_waiting == delta then redis.call('SADD', WAITING_USERS, user) end
      end
    end
  end
  if waiting ~= 0 then redis.call('INCRBY', WAITING_COUNT, waiting) end
  for kind, n in pairs(kinds_moved) do
    if n ~= 0 and redis.call('HINCRBY', KIND_RUNNING, kind, n) == 0 then
      redis.call('HDEL', KIND_RUNNING, kind)
    end
  end
  moved, moved_users, kinds_moved = {}, {}, {}
  return users
end

-- Counts and writes one task's move.
local function move(user, id, from, to)
  count_move(user, id, from, to)
  apply_moves()
end

-- Puts a user at the back of the ring if it has ready work and room to run;
-- a user with ready work and no room is held until it has. One joining
-- with nothing running is a newcomer too, until a newcomers' worker takes
-- it (an entry left when it starts something first is dropped then).
local function activate(user, max_running)
  if redis.call('ZSCORE', RING, user) then return end
  if is_paused(user) then return end
  local has_ready = redis.call('ZCARD', ready_key(user)) > 0
  local running = has_ready and tonumber(redis.call('HGET', user_key(user), 'running') or 0)
  if has_ready and max_running > 0 and running >= max_running then
    redis.call('SADD', HELD, user)
    return
  end
  -- (Without a bound, held users all go at once: see release_held.)
  if max_running > 0 then redis.call('SREM', HELD, user) end
  if not has_ready then return end
  local ticket = redis.call('INCR', TICKETS)
  redis.call('ZADD', RING, ticket, user)
  if running == 0 then redis.call('ZADD', FRESH, 'NX', ticket, user) end
end

-- Users held by a max_running that has since been lifted (a reload) go
-- back in the ring; with a bound, each is let back as its tasks finish.
local function release_held(max_running)
  if max_running > 0 or redis.call('EXISTS', HELD) == 0 then return end
  for _, user in ipairs(redis.call('SMEMBERS', HELD)) do activate(user, 0) end
  redis.call('DEL', HELD)
end

-- Adds a task due at `run_at` behind a user's ready tasks.
local function push_back(user, id, run_at)
  redis.call('ZADD', ready_key(user), redis.call('INCR', SEQUENCE), id)
  if not is_paused(user) then redis.call('ZADD', DUE, run_at, id) end
end

-- Puts a task due at `run_at` before all of a user's ready tasks.
local function push_front(user, id, run_at)
  local first = redis.call('ZRANGE', ready_key(user), 0, 0, 'WITHSCORES')[2]
  local score = first and (tonumber(first) - 1) or redis.call('INCR', SEQUENCE)
  redis.call('ZADD', ready_key(user), score, id)
  if not is_paused(user) then redis.call('ZADD', DUE, run_at, id) end
end

-- Takes a task out of a user's ready tasks, wherever it stands, or out of
-- its kind's parked tasks.
local function unready(user, id)
  if redis.call('ZREM', ready_key(user), id) == 0 then
    redis.call('ZREM', parked_key(redis.call('HGET', task_key(id), 'kind')), id)
  end
  redis.call('ZREM', DUE, id)
end

-- Makes up to `most` waiting tasks due by `now` ready, behind their users'
-- ready tasks, in run_at order.
local function promote(now, max_running, most)
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'WITHSCORES', 'LIMIT', 0, most)
  for i = 1, #due, 2 do
    local id = due[i]
    redis.call('ZREM', DELAYED, id)
    local t = redis.call('HMGET', task_key(id), 'user', 'status')
    if t[1] and WAITING[t[2]] then
      push_back(t[1], id, due[i + 1])
      activate(t[1], max_running)
    end
  end
end

-- Ends a task of `user`'s in a final state, kept until `expires`.
local function finalize(user, id, from, to, now, expires)
  move(user, id, from, to)
  redis.call('HSET', task_key(id), 'status', to, 'finished_at', now, 'expires_at', expires)
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

-- Cancels a waiting task of `user`'s in `status`, kept until `expires`.
local function cancel_waiting(user, id, status, now, expires)
  unready(user, id)
  redis.call('ZREM', DELAYED, id)
  finalize(user, id, status, 'cancelled', now, expires)
end

-- Queues a dead or cancelled task of `user`'s again under its id, due
-- `now`, its attempts and outcome reset, behind the user's ready tasks.
local function requeue(user, id, status, now, max_running)
  redis.call('ZREM', EXPIRY, id)
  redis.call('HDEL', task_key(id), 'finished_at', 'expires_at', 'error', 'result', 'started_at')
  redis.call('HSET', task_key(id), 'status', 'queued', 'attempts', 0, 'run_at', now)
  move(user, id, status, 'queued')
  push_back(user, id, now)
  activate(user, max_running)
end

-- Whether an operator may queue a task in `status` again: dead or
-- cancelled, and not left by a deleted user (`owner_gone`).
local function retriable(status, owner_gone)
  return (status == 'dead' or status == 'cancelled') and not owner_gone
end
