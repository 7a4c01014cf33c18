-- Uses a session: reinflates it if it is live and the user's.
-- ARGV: prefix, id, user, now, idle_ttl, grace.
-- Answers {'live', created, seen, absolute, refreshes, name, email, joined},
-- {'expired'} (and removes it) or {'unknown'}.
local id, user = ARGV[2], ARGV[3]
local now, idle_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local key = session_key(id)
local s = redis.call('HMGET', key, 'user', 'created', 'seen', 'absolute', 'refreshes',
  'name', 'email', 'joined')
if s[1] ~= user then
  return { 'unknown' }
end
local seen, absolute = tonumber(s[3]), tonumber(s[4])
if now >= math.min(seen + idle_ttl, absolute) then
  forget(id, user)
  return { 'expired' }
end
seen = math.max(seen, now)
local refreshes = tonumber(s[5]) + 1
redis.call('HSET', key, 'seen', string.format('%d', seen), 'refreshes', refreshes)
keep_until(id, user, math.min(seen + idle_ttl, absolute), now, tonumber(ARGV[6]))
return { 'live', s[2], string.format('%d', seen), s[4], tostring(refreshes),
  s[6] or '', s[7] or '', s[8] or '0' }
