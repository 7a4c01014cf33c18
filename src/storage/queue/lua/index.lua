-- ARGV: prefix, which index ('expiry', 'due', 'delayed' or 'leases'),
--       offset, count.
-- Adds `count` of that index's tasks, from `offset`, to the index of every
-- task (for tasks stored before it existed). Answers how many it looked at
-- and how many were new.
local source = ({ expiry = EXPIRY, due = DUE, delayed = DELAYED, leases = LEASES })[ARGV[2]]
local offset, count = tonumber(ARGV[3]), tonumber(ARGV[4])
local ids = redis.call('ZRANGE', source, offset, offset + count - 1)
if #ids == 0 then return { 0, 0 } end
local members = {}
for _, id in ipairs(ids) do
  members[#members + 1] = 0
  members[#members + 1] = id
end
return { #ids, redis.call('ZADD', TASKS, unpack(members)) }
