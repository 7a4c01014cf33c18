-- ARGV: prefix, user, 'pause' or 'resume', max_running
-- A paused user's tasks wait, out of the ring, in their order; resumed,
-- the user joins the back of the ring. Answers 1 if that changed anything.
local user = ARGV[2]
if ARGV[3] == 'pause' then
  if redis.call('SADD', PAUSED, user) == 0 then return 0 end
  redis.call('ZREM', RING, user)
  redis.call('ZREM', FRESH, user)
  redis.call('SREM', HELD, user)
  return 1
end
if redis.call('SREM', PAUSED, user) == 0 then return 0 end
activate(user, tonumber(ARGV[4]))
return 1
