-- ARGV: prefix, then kinds.
-- Answers the tasks waiting over all users, the users with any waiting,
-- the run_at of the longest-due ready task ('' if none is ready), then for
-- each kind asked for its running tasks and its tasks parked by its limits.
local oldest = redis.call('ZRANGE', DUE, 0, 0, 'WITHSCORES')[2]
local answer = { tonumber(redis.call('GET', WAITING_COUNT) or 0), redis.call('SCARD', WAITING_USERS),
  oldest or '' }
for i = 2, #ARGV do
  answer[#answer + 1] = math.max(tonumber(redis.call('HGET', KIND_RUNNING, ARGV[i]) or 0), 0)
  answer[#answer + 1] = redis.call('ZCARD', parked_key(ARGV[i]))
end
return answer
