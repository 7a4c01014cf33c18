-- Opens a session. ARGV: prefix, id, user, now, absolute, idle_ttl, grace,
-- the user's name, email ('' for none) and joined (ms), the session's user
-- agent and address ('' for none), and the most sessions a user holds.
-- A user past that loses sessions that have lapsed, or else those used
-- longest ago; answers their ids.
local id, user = ARGV[2], ARGV[3]
local now, absolute, idle_ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local most = tonumber(ARGV[13])
local ended = {}
local others = redis.call('SMEMBERS', user_sessions_key(user))
if #others >= most then
  local by_seen = {}
  for _, other in ipairs(others) do
    local s = redis.call('HMGET', session_key(other), 'seen', 'absolute')
    local seen, ends = tonumber(s[1]), tonumber(s[2])
    -- Gone or lapsed: first to go.
    if not seen or not ends or now >= math.min(seen + idle_ttl, ends) then seen = -1 end
    by_seen[#by_seen + 1] = { seen, other }
  end
  table.sort(by_seen, function(a, b) return a[1] < b[1] end)
  for i = 1, #others - most + 1 do
    local other = by_seen[i][2]
    forget(other, user)
    ended[#ended + 1] = other
  end
  redis.call('PUBLISH', REVOKED, table.concat(ended, ','))
end
redis.call('HSET', session_key(id), 'user', user, 'created', ARGV[4], 'seen', ARGV[4],
  'absolute', ARGV[5], 'refreshes', 0, 'name', ARGV[8], 'email', ARGV[9], 'joined', ARGV[10],
  'agent', ARGV[11], 'ip', ARGV[12])
keep_until(id, user, math.min(now + idle_ttl, absolute), now, tonumber(ARGV[7]))
return ended
