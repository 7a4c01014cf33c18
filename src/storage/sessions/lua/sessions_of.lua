-- A user's sessions live at `now`. ARGV: prefix, user, now, idle_ttl,
-- most. Answers {id, created, seen, absolute, refreshes, agent, ip} for up
-- to `most`.
local user, now, idle_ttl, most = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local live = {}
for _, id in ipairs(redis.call('SMEMBERS', user_sessions_key(user))) do
  local s = redis.call('HMGET', session_key(id), 'user', 'created', 'seen', 'absolute', 'refreshes',
    'agent', 'ip')
  if s[1] == user and now < math.min(tonumber(s[3]) + idle_ttl, tonumber(s[4])) then
    live[#live + 1] = { id, s[2], s[3], s[4], s[5], s[6] or '', s[7] or '' }
    if #live == most then break end
  end
end
return live
