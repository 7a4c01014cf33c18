-- ARGV: prefix, now, most to purge
-- Forgets finished tasks and idempotency keys past their expiry, at most
-- `most` of each. Answers how many tasks and how many keys went.
local now, most = ARGV[2], tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now, 'LIMIT', 0, most)
for _, id in ipairs(expired) do
  redis.call('ZREM', EXPIRY, id)
  local t = redis.call('HMGET', task_key(id), 'user', 'status')
  if t[1] then
    local user = t[1]
    redis.call('ZREM', all_key(user), id)
    redis.call('HINCRBY', user_key(user), t[2], -1)
    -- A user with no task left leaves nothing behind.
    if redis.call('HINCRBY', user_key(user), 'tasks', -1) <= 0 then
      redis.call('DEL', user_key(user))
      redis.call('ZREM', FRESH, user)
    end
    redis.call('DEL', task_key(id))
  end
end
local keys = redis.call('ZRANGEBYSCORE', IDEMPOTENCY, '-inf', now, 'LIMIT', 0, most)
for _, key in ipairs(keys) do
  redis.call('ZREM', IDEMPOTENCY, key)
  redis.call('DEL', key)
end
return { #expired, #keys }
