-- ARGV: prefix, now, most to purge
-- Forgets finished tasks and idempotency keys past their expiry, at most
-- `most` of each. Answers how many tasks and how many keys went.
local now, most = ARGV[2], tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now, 'LIMIT', 0, most)
for _, id in ipairs(expired) do
  local t = redis.call('HMGET', task_key(id), 'user', 'status')
  -- A user with no task left leaves nothing behind.
  if t[1] and forget(t[1], id, t[2]) <= 0 then
    redis.call('DEL', user_key(t[1]))
    redis.call('ZREM', FRESH, t[1])
  end
end
local keys = redis.call('ZRANGEBYSCORE', IDEMPOTENCY, '-inf', now, 'LIMIT', 0, most)
for _, key in ipairs(keys) do
  redis.call('ZREM', IDEMPOTENCY, key)
  redis.call('DEL', key)
end
return { #expired, #keys }
