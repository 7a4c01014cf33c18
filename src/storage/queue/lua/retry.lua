-- ARGV: prefix, id, now, max_running
-- Queues a dead or cancelled task again under its id, attempts reset.
-- Answers {'retried', task}, {'not_retriable', task} or {'not_found'}.
local id, now = ARGV[2], ARGV[3]
local t = redis.call('HMGET', task_key(id), 'user', 'status', 'expires_at', 'owner_gone')
if not t[1] or (t[3] and tonumber(t[3]) <= tonumber(now)) then return { 'not_found' } end
if not retriable(t[2], t[4]) then return { 'not_retriable', redis.call('HGETALL', task_key(id)) } end
requeue(t[1], id, t[2], now, tonumber(ARGV[4]))
return { 'retried', redis.call('HGETALL', task_key(id)) }
