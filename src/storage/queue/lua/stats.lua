-- ARGV: prefix
-- Answers the tasks waiting over all users, the users with any waiting,
-- and the run_at of the longest-due ready task ('' if none is ready).
local oldest = redis.call('ZRANGE', DUE, 0, 0, 'WITHSCORES')[2]
return { tonumber(redis.call('GET', WAITING_COUNT) or 0), redis.call('SCARD', WAITING_USERS), oldest or '' }
