-- Writes the uses a replica served from its copies. ARGV: prefix, now,
-- idle_ttl, grace, then for each session its id, user, latest use (ms) and
-- how many uses. Answers, for each in turn, its seen and refreshes now, or
-- 0 for a session that is gone (revoked, or swept).
local now, idle_ttl, grace = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local answers = {}
for i = 5, #ARGV, 4 do
  local id, user = ARGV[i], ARGV[i + 1]
  local key = session_key(id)
  local s = redis.call('HMGET', key, 'user', 'seen', 'absolute', 'refreshes')
  if s[1] ~= user then
    answers[#answers + 1] = 0
  else
    -- The replica served these uses while its copy was live: they stand.
    local seen = math.max(tonumber(s[2]), tonumber(ARGV[i + 2]))
    local refreshes = tonumber(s[4]) + tonumber(ARGV[i + 3])
    redis.call('HSET', key, 'seen', string.format('%d', seen), 'refreshes', refreshes)
    keep_until(id, user, math.min(seen + idle_ttl, tonumber(s[3])), now, grace)
    answers[#answers + 1] = { string.format('%d', seen), tostring(refreshes) }
  end
end
return answers
