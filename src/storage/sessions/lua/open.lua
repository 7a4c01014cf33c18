-- Opens a session. ARGV: prefix, id, user, now, absolute, idle_ttl, grace.
local id, user = ARGV[2], ARGV[3]
local now, absolute, idle_ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('HSET', session_key(id), 'user', user, 'created', ARGV[4], 'seen', ARGV[4],
  'absolute', ARGV[5], 'refreshes', 0)
keep_until(id, user, math.min(now + idle_ttl, absolute), now, tonumber(ARGV[7]))
return 1
