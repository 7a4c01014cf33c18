-- ARGV: prefix, user. Answers the user's tasks in each status, in the
-- order queued, running, succeeded, failed, dead, cancelled.
return redis.call('HMGET', user_key(ARGV[2]), 'queued', 'running', 'succeeded', 'failed', 'dead',
  'cancelled')
