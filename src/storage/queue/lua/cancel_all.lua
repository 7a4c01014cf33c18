-- ARGV: prefix, user, now, expires_at, most to cancel
-- Cancels up to `most` waiting tasks of a user; the caller repeats while a
-- full batch comes back. Answers how many.
local user, now, expires, most = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local cancelled = 0
for _, status in ipairs({ 'queued', 'failed' }) do
  if cancelled >= most then break end
  for _, id in ipairs(redis.call('ZRANGE', status_key(user, status), 0, most - cancelled - 1)) do
    unready(user, id)
    redis.call('ZREM', DELAYED, id)
    finalize(user, id, status, 'cancelled', now, expires)
    cancelled = cancelled + 1
  end
end
return cancelled
