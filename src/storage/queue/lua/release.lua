-- ARGV: prefix, max_running, then pairs of task id and fence.
-- Current leases go back unfinished: each task returns to the front of its
-- queue, in the order they ran, and the attempt is not counted. Answers
-- how many were current.
local current = {}
for i = 3, #ARGV, 2 do
  local t = leased(ARGV[i], ARGV[i + 1])
  if t then current[#current + 1] = { ARGV[i], ARGV[i + 1], t[3], t[4] } end
end
for _, held in ipairs(newest_first(current)) do
  local id, user = held[1], held[3]
  redis.call('ZREM', LEASES, id)
  redis.call('HDEL', task_key(id), 'started_at')
  redis.call('HSET', task_key(id), 'status', 'queued', 'attempts', tonumber(held[4]) - 1)
  move(user, id, 'running', 'queued')
  push_front(user, id, redis.call('HGET', task_key(id), 'run_at'))
  activate(user, tonumber(ARGV[2]))
end
return #current
