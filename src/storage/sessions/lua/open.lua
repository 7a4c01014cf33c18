-- Opens a session. ARGV: prefix, id, user, now, absolute, idle_ttl, grace,
-- then the user's name, email ('' for none) and joined (ms).
local id, user = ARGV[2], ARGV[3]
local now, absolute, idle_ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('HSET', session_key(id), 'user', user, 'created', ARGV[4], 'seen', ARGV[4],
  'absolute', ARGV[5], 'refreshes', 0, 'name', ARGV[8], 'email', ARGV[9], 'joined', ARGV[10])
keep_until(id, user, math.min(now + idle_ttl, absolute), now, tonumber(ARGV[7]))
return 1
