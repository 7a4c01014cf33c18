-- ARGV: prefix, user. Answers the size of each status index, in the order
-- queued, running, succeeded, failed, dead, cancelled.
local counts = {}
for _, status in ipairs({ 'queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled' }) do
  counts[#counts + 1] = redis.call('ZCARD', status_key(ARGV[2], status))
end
return counts
