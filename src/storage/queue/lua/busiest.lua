-- ARGV: prefix, most users to answer, most users to look at
-- Answers {user, waiting, running} for the users with the most tasks
-- waiting, most first, among the first users with any that SSCAN finds.
local most, look = tonumber(ARGV[2]), tonumber(ARGV[3])
local users, cursor = {}, '0'
repeat
  local found = redis.call('SSCAN', WAITING_USERS, cursor, 'COUNT', 1000)
  cursor = found[1]
  for _, user in ipairs(found[2]) do
    if #users < look then users[#users + 1] = user end
  end
until cursor == '0' or #users >= look
local loads = {}
for _, user in ipairs(users) do
  local c = redis.call('HMGET', user_key(user), 'queued', 'failed', 'running')
  loads[#loads + 1] = { user, tonumber(c[1] or 0) + tonumber(c[2] or 0), tonumber(c[3] or 0) }
end
table.sort(loads, function(a, b)
  if a[2] ~= b[2] then return a[2] > b[2] end
  return a[1] < b[1]
end)
local top = {}
for i = 1, math.min(most, #loads) do top[i] = loads[i] end
return top
