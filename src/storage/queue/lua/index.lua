-- ARGV: prefix, which index ('expiry', 'due', 'delayed', 'leases' or
--       'paused', the ready tasks of paused users, which are in no other),
--       offset, count.
-- Adds `count` of that index's tasks, from `offset`, to the index of every
-- task (for tasks stored before it existed). Answers how many it looked at
-- and how many were new.
local offset, count = tonumber(ARGV[3]), tonumber(ARGV[4])
local ids
if ARGV[2] == 'paused' then
  -- `offset` counts users here.
  ids = {}
  local users = redis.call('SMEMBERS', PAUSED)
  for i = offset + 1, math.min(offset + count, #users) do
    for _, id in ipairs(redis.call('ZRANGE', ready_key(users[i]), 0, -1)) do ids[#ids + 1] = id end
  end
  local looked = math.max(math.min(offset + count, #users) - offset, 0)
  local new = 0
  for i = 1, #ids, 1000 do
    local members = {}
    for j = i, math.min(i + 999, #ids) do
      members[#members + 1] = 0
      members[#members + 1] = ids[j]
    end
    new = new + redis.call('ZADD', TASKS, unpack(members))
  end
  return { looked, new }
end
local source = ({ expiry = EXPIRY, due = DUE, delayed = DELAYED, leases = LEASES })[ARGV[2]]
ids = redis.call('ZRANGE', source, offset, offset + count - 1)
if #ids == 0 then return { 0, 0 } end
local members = {}
for _, id in ipairs(ids) do
  members[#members + 1] = 0
  members[#members + 1] = id
end
return { #ids, redis.call('ZADD', TASKS, unpack(members)) }
