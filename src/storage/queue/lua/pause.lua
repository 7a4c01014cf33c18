-- ARGV: prefix, user, 'pause' or 'resume', max_running
-- A paused user's tasks wait, out of the ring, in their order, and out of
-- DUE (they are not overdue); resumed, the user joins the back of the
-- ring. Answers 1 if that changed anything.
local user = ARGV[2]
local ready = redis.call('ZRANGE', ready_key(user), 0, -1)
if ARGV[3] == 'pause' then
  if redis.call('SADD', PAUSED, user) == 0 then return 0 end
  redis.call('ZREM', RING, user)
  redis.call('ZREM', FRESH, user)
  redis.call('SREM', HELD, user)
  for i = 1, #ready, 1000 do
    redis.call('ZREM', DUE, unpack(ready, i, math.min(i + 999, #ready)))
  end
  return 1
end
if redis.call('SREM', PAUSED, user) == 0 then return 0 end
for _, id in ipairs(ready) do
  redis.call('ZADD', DUE, redis.call('HGET', task_key(id), 'run_at'), id)
end
activate(user, tonumber(ARGV[4]))
return 1
