-- ARGV: prefix, user, id, now, expires_at
-- Answers {'cancelled', task}, {'not_waiting', task} or {'not_found'}.
local user, id, now = ARGV[2], ARGV[3], ARGV[4]
local t = redis.call('HMGET', task_key(id), 'user', 'status', 'expires_at')
if t[1] ~= user or (t[3] and tonumber(t[3]) <= tonumber(now)) then return { 'not_found' } end
-- Cancelling a cancelled task again changes nothing and answers the same.
if t[2] == 'cancelled' then return { 'cancelled', redis.call('HGETALL', task_key(id)) } end
if not WAITING[t[2]] then return { 'not_waiting', redis.call('HGETALL', task_key(id)) } end
cancel_waiting(user, id, t[2], now, ARGV[5])
return { 'cancelled', redis.call('HGETALL', task_key(id)) }
