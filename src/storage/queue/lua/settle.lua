-- ARGV: prefix, now, when a task finished now expires, when a lease taken
--       now lapses, max_running, most tasks to lease round robin, most
--       delayed tasks to make ready, call id, lease length in ms, most tasks
--       to lease for newcomers, most entries to look at for them, the limits
--       per kind ("kind max_running max_per_second ...", -1 and 0 for none),
--       then for each attempt to record its task id, fence, outcome
--       ('succeeded', 'failed' or 'rejected'), result or error, and
--       retry_at.
-- Records how the attempts ended, then leases up to the numbers asked for:
-- one call where a worker would otherwise make two. Answers {finished,
-- leased, newcomers, left}: for each attempt the status it left the task
-- in ('stale' if its lease was no longer current), {fence, task} for each
-- task leased round robin and for newcomers, and {users in the ring,
-- users waiting as newcomers, kinds with tasks parked, the soonest delayed
-- task's run_at or -1} after the call, for a caller choosing between
-- partitions.
-- Both halves are safe to repeat: an outcome recorded already is answered
-- again, and the call id makes a repeated call answer the leases it made
-- the first time that are still current, instead of leasing more.
--
-- Per task this costs a read and a write of its hash; everything shared
-- (counts, indexes, the ring) is written once per user or once per call.
local now, expires, deadline = ARGV[2], ARGV[3], ARGV[4]
local max_running, want, newcomers = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[10])
local call = P .. ':lease-call:' .. ARGV[8]
local now_ms = tonumber(now)
-- The limits per kind: a kind at its max_running, or started
-- max_per_second times in the last second, has its tasks parked as they
-- come up, so that the tasks behind them in their users' queues still run.
local kind_limits, limited = {}, false
for kind, most, rate in string.gmatch(ARGV[12], '(%S+) (%-?%d+) (%d+)') do
  kind_limits[kind] = { most = tonumber(most), rate = tonumber(rate) }
  limited = true
end

-- Members to add to or remove from a sorted set, sent in one call each.
local function batch_zadd(key, pairs_)
  if #pairs_ > 0 then redis.call('ZADD', key, unpack(pairs_)) end
end
local function batch_zrem(key, members)
  if #members > 0 then redis.call('ZREM', key, unpack(members)) end
end

-- Records one attempt's outcome under its lease.
local released, expiring, delayed = {}, {}, {}
local function finish(id, fence, outcome, value, retry_at)
  local t = redis.call('HMGET', task_key(id), 'status', 'fence', 'user', 'attempts',
    'max_attempts', 'recorded_by', 'recorded_as', 'error', 'kind', 'counted')
  if t[1] ~= 'running' or t[2] ~= fence then
    -- This lease's outcome, recorded already (a call sent again): answer
    -- the same. Any other lease is stale.
    if t[6] == fence then return t[7] end
    return 'stale'
  end
  local status
  if outcome == 'succeeded' then
    status = 'succeeded'
    redis.call('HSET', task_key(id), 'status', status, 'result', value, 'finished_at', now,
      'expires_at', expires, 'recorded_by', fence, 'recorded_as', status)
    -- An earlier attempt's error is no longer the task's.
    if t[8] then redis.call('HDEL', task_key(id), 'error') end
  elseif outcome == 'failed' and tonumber(t[4]) < tonumber(t[5]) then
    status = 'failed'
    redis.call('HSET', task_key(id), 'status', status, 'error', value, 'run_at', retry_at,
      'recorded_by', fence, 'recorded_as', status)
    delayed[#delayed + 1] = retry_at
    delayed[#delayed + 1] = id
  else
    status = 'dead'
    redis.call('HSET', task_key(id), 'status', status, 'error', value, 'finished_at', now,
      'expires_at', expires, 'recorded_by', fence, 'recorded_as', status)
  end
  released[#released + 1] = id
  if status ~= 'failed' then
    expiring[#expiring + 1] = expires
    expiring[#expiring + 1] = id
  end
  count_move(t[3], id, 'running', status, nil, t[10] == fence and t[9])
  return status
end

local finished = {}
for i = 13, #ARGV, 5 do
  finished[#finished + 1] = finish(unpack(ARGV, i, i + 4))
end
batch_zrem(LEASES, released)
batch_zadd(EXPIRY, expiring)
batch_zadd(DELAYED, delayed)
-- A user held back by max_running may run again.
local finishers = apply_moves()
if max_running > 0 then
  for _, user in ipairs(finishers) do activate(user, max_running) end
end

-- What is left to lease after the call.
local function left()
  local soonest = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')[2]
  return { redis.call('ZCARD', RING), redis.call('ZCARD', FRESH), redis.call('SCARD', PARKED_KINDS),
    tonumber(soonest or -1) }
end

if want == 0 and newcomers == 0 then return { finished, {}, {}, left() } end

-- A call sent again answers the leases it made that are still current:
-- "id fence ..." round robin, then "|", then those for newcomers.
local made = redis.call('GET', call)
if made then
  local answer = { finished }
  local bar = string.find(made, '|', 1, true)
  for _, part in ipairs({ string.sub(made, 1, bar - 1), string.sub(made, bar + 1) }) do
    local granted = {}
    for id, fence in string.gmatch(part, '(%S+) (%d+)') do
      local t = redis.call('HMGET', task_key(id), 'status', 'fence')
      if t[1] == 'running' and t[2] == fence then
        granted[#granted + 1] = { tonumber(fence), redis.call('HGETALL', task_key(id)) }
      end
    end
    answer[#answer + 1] = granted
  end
  answer[#answer + 1] = left()
  return answer
end

promote(now, max_running, tonumber(ARGV[7]))
release_held(max_running)

-- What each kind has used of its limits, read at its first need in a call
-- and kept up to date through it: {running, starts in the last second,
-- starts made by this call}.
local kind_use = {}
local function use_of(kind)
  local use = kind_use[kind]
  if not use then
    use = { running = math.max(tonumber(redis.call('HGET', KIND_RUNNING, kind) or 0), 0),
      recent = 0, started = 0 }
    if kind_limits[kind] and kind_limits[kind].rate > 0 then
      redis.call('ZREMRANGEBYSCORE', kind_starts_key(kind), '-inf', now_ms - 1000)
      use.recent = redis.call('ZCARD', kind_starts_key(kind))
    end
    kind_use[kind] = use
  end
  return use
end

-- How many more tasks of `kind` may start now.
local function room_of(kind, most)
  local limit = kind_limits[kind]
  if not limit then return most end
  local use = use_of(kind)
  if limit.most >= 0 then most = math.min(most, limit.most - use.running) end
  if limit.rate > 0 then most = math.min(most, limit.rate - use.recent) end
  return most
end

-- Whether one more task of `kind` may start now; if so it is counted.
local function take_room(kind)
  if room_of(kind, 1) < 1 then return false end
  local use = use_of(kind)
  use.running, use.recent, use.started = use.running + 1, use.recent + 1, use.started + 1
  return true
end

-- Tasks each user started in this call: their count of running tasks is
-- written only at its end.
local started_now = {}

-- Sets a task that came up with no room for its kind aside, with its
-- place in its user's queue; its user goes on to the next.
local parked, parked_users = {}, {}
local function park(user, id, score, kind)
  redis.call('ZADD', parked_key(kind), score, id)
  redis.call('SADD', PARKED_KINDS, kind)
  parked[#parked + 1] = id
  parked_users[#parked_users + 1] = user
end
local function let_parked_users_go_on()
  for _, user in ipairs(parked_users) do activate(user, max_running) end
  parked_users = {}
end

-- Parked tasks whose kind has room again (or no limits any more) go back
-- to their places in their users' queues, oldest first. One that is no
-- longer waiting (cancelled by a version that did not know of parking)
-- is dropped.
if redis.call('SCARD', PARKED_KINDS) > 0 then
  for _, kind in ipairs(redis.call('SMEMBERS', PARKED_KINDS)) do
    local room = room_of(kind, tonumber(ARGV[7]))
    if room > 0 then
      local back = redis.call('ZPOPMIN', parked_key(kind), room)
      for i = 1, #back, 2 do
        local t = redis.call('HMGET', task_key(back[i]), 'user', 'run_at', 'status')
        if t[1] and WAITING[t[3]] then
          redis.call('ZADD', ready_key(t[1]), back[i + 1], back[i])
          if not is_paused(t[1]) then redis.call('ZADD', DUE, t[2], back[i]) end
          activate(t[1], max_running)
        end
      end
      if redis.call('EXISTS', parked_key(kind)) == 0 then redis.call('SREM', PARKED_KINDS, kind) end
    end
  end
end

-- How many tasks each of `users` (the head of the ring) gets, dealt one
-- per user per turn as the ring would; `whole` when `users` is the whole
-- ring, so that the deal goes round again. Answers each user's share,
-- the turn that last gave to each, the users given to in turn order, and
-- how many of `users` had a turn at all.
local function deal(users, room, wanted, whole)
  local share, last, turns, reached = {}, {}, {}, 0
  for i = 1, #users do share[i] = 0 end
  repeat
    local gave = false
    for i = 1, #users do
      if #turns == wanted then break end
      reached = math.max(reached, i)
      if share[i] < room[i] then
        share[i] = share[i] + 1
        turns[#turns + 1] = i
        last[i] = #turns
        gave = true
      end
    end
  until not whole or not gave or #turns == wanted
  return share, last, turns, reached
end

-- Round robin: each user at the head of the ring gives its first ready
-- task and goes to the back, or leaves the ring when it has no more to
-- give or no room to run it. Worked out for a whole slice of the ring at
-- once, then written: users keep the order their last turns left them in.
local granted, ids_of = {}, {}
while #granted < want do
  local wanted = want - #granted
  local users = redis.call('ZRANGE', RING, 0, wanted - 1)
  if #users == 0 then break end
  local ready, room = {}, {}
  for i, user in ipairs(users) do
    ready[i] = redis.call('ZCARD', ready_key(user))
    room[i] = ready[i]
    if max_running > 0 then
      local running = tonumber(redis.call('HGET', user_key(user), 'running') or 0)
        + (started_now[user] or 0)
      room[i] = math.max(math.min(ready[i], max_running - running), 0)
    end
  end
  local share, last, turns, reached = deal(users, room, wanted, #users < wanted)

  -- Users that had a turn go out of the ring; those with more to give
  -- come back in at the back, in the order of their last turns, and those
  -- with more but no room to run it are held.
  local visited, back, held = {}, {}, {}
  for i = 1, reached do
    visited[i] = users[i]
    if share[i] > 0 and share[i] < room[i] then back[#back + 1] = i end
    if share[i] == room[i] and ready[i] > room[i] then held[#held + 1] = users[i] end
  end
  batch_zrem(RING, visited)
  if #held > 0 then redis.call('SADD', HELD, unpack(held)) end
  if #back > 0 then
    table.sort(back, function(a, b) return last[a] < last[b] end)
    local ticket = redis.call('INCRBY', TICKETS, #back) - #back
    local entries = {}
    for n, i in ipairs(back) do
      entries[#entries + 1] = ticket + n
      entries[#entries + 1] = users[i]
    end
    batch_zadd(RING, entries)
  end

  -- Each user's first `share` ready tasks (with their scores), in the
  -- order of the turns.
  local firsts = {}
  for i, user in ipairs(users) do
    if share[i] > 0 then firsts[i] = redis.call('ZPOPMIN', ready_key(user), share[i]) end
  end
  local taken, parked_before = {}, #parked
  for _, i in ipairs(turns) do
    taken[i] = (taken[i] or 0) + 1
    local id = firsts[i][2 * taken[i] - 1]
    local kind = limited and redis.call('HGET', task_key(id), 'kind')
    if kind and not take_room(kind) then
      park(users[i], id, firsts[i][2 * taken[i]], kind)
    else
      granted[#granted + 1] = { users[i], id }
      ids_of[#ids_of + 1] = id
      started_now[users[i]] = (started_now[users[i]] or 0) + 1
    end
  end
  let_parked_users_go_on()
  -- The whole ring was dealt and nothing set aside: nobody has more to
  -- give. Parking is bounded by a call's promotions, like them.
  if #users < wanted and #parked == parked_before then break end
  if #parked >= tonumber(ARGV[7]) then break end
end

-- Newcomers: users that joined the ring with nothing running, longest
-- waiting first, each given its first ready task. A user keeps its place
-- in the ring while it has more to run and room to run it. Entries of
-- users that have started something since are dropped.
local any, started, looked, fresh_again = #granted, {}, 0, {}
for _, held in ipairs(granted) do started[held[1]] = true end
while #granted - any < newcomers and looked < tonumber(ARGV[11]) do
  local head = redis.call('ZPOPMIN', FRESH)
  local user = head[1]
  if not user then break end
  looked = looked + 1
  if not started[user] and redis.call('ZSCORE', RING, user)
      and tonumber(redis.call('HGET', user_key(user), 'running') or 0) == 0 then
    local first = redis.call('ZPOPMIN', ready_key(user))
    local id = first[1]
    local kind = limited and redis.call('HGET', task_key(id), 'kind')
    local more = redis.call('ZCARD', ready_key(user)) > 0
    if kind and not take_room(kind) then
      park(user, id, first[2], kind)
      -- Still a newcomer, at the next call: its next task may have room.
      if more then
        fresh_again[#fresh_again + 1] = redis.call('ZSCORE', RING, user)
        fresh_again[#fresh_again + 1] = user
      else
        redis.call('ZREM', RING, user)
      end
    else
      granted[#granted + 1] = { user, id }
      ids_of[#ids_of + 1] = id
      started[user] = true
      if not more or max_running == 1 then
        redis.call('ZREM', RING, user)
        if more then redis.call('SADD', HELD, user) end
      end
    end
  end
end
if #fresh_again > 0 then redis.call('ZADD', FRESH, 'NX', unpack(fresh_again)) end
batch_zrem(DUE, parked)
parked_users = {}
-- The starts of rate-bound kinds, each a member of its own, kept a second.
for kind, use in pairs(kind_use) do
  if use.started > 0 and kind_limits[kind] and kind_limits[kind].rate > 0 then
    local entries = {}
    for n = 1, use.started do
      entries[#entries + 1] = now_ms
      entries[#entries + 1] = ARGV[8] .. ':' .. n
    end
    redis.call('ZADD', kind_starts_key(kind), unpack(entries))
    redis.call('PEXPIRE', kind_starts_key(kind), 1000)
  end
end
if #granted == 0 then return { finished, {}, {}, left() } end
batch_zrem(DUE, ids_of)

-- Each task taken gets the next fence, in the order of the turns.
local fence = redis.call('INCRBY', FENCES, #granted) - #granted
local leases, made = {}, {}
for n, held in ipairs(granted) do
  local user, id = held[1], held[2]
  fence = fence + 1
  local task = redis.call('HGETALL', task_key(id))
  local fields = {}
  for k = 1, #task, 2 do fields[task[k]] = k + 1 end
  local from = task[fields.status]
  local attempts = tonumber(task[fields.attempts]) + 1
  redis.call('HSET', task_key(id), 'status', 'running', 'attempts', attempts,
    'started_at', now, 'fence', fence, 'counted', fence)
  -- Answer the task as written, without reading it again.
  for field, value in pairs({ status = 'running', attempts = attempts, started_at = now, fence = fence }) do
    if fields[field] then
      task[fields[field]] = tostring(value)
    else
      task[#task + 1] = field
      task[#task + 1] = tostring(value)
    end
  end
  count_move(user, id, from, 'running', #task[fields.payload], task[fields.kind])
  leases[#leases + 1] = deadline
  leases[#leases + 1] = id
  made[#made + 1] = id .. ' ' .. fence
  if n == any then made[#made + 1] = '|' end
  granted[n] = { fence, task }
end
if any == 0 then table.insert(made, 1, '|') end
apply_moves()
batch_zadd(LEASES, leases)
redis.call('SET', call, table.concat(made, ' '), 'PX', ARGV[9])
return { finished, { unpack(granted, 1, any) }, { unpack(granted, any + 1) }, left() }
