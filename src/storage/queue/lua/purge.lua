-- ARGV: prefix, now, most to purge
-- Forgets finished tasks and idempotency keys past their expiry, at most
-- `most` of each. Answers how many tasks and how many keys went.
local now, most = ARGV[2], tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now, 'LIMIT', 0, most)
for _, id in ipairs(expired) do
  redis.call('ZREM', EXPIRY, id)
  local t = redis.call('HMGET', task_key(id), 'user', 'status')
  if t[1] then
    redis.call('ZREM', user_key(t[1], 'all'), id)
    redis.call('ZREM', status_key(t[1], t[2]), id)
    redis.call('DEL', task_key(id))
  end
end
local keys = redis.call('ZRANGEBYSCORE', IDEMPOTENCY, '-inf', now, 'LIMIT', 0, most)
for _, key in ipairs(keys) do
  redis.call('ZREM', IDEMPOTENCY, key)
  redis.call('DEL', key)
end
return { #expired, #keys }
