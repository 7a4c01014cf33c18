-- ARGV: prefix, user, status ('' for all), before ('' for none), count
-- Answers the tasks, newest first: ids are UUID v7, so their order is
-- creation order, and the indexes keep them sorted by id.
local user, status, before, count = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local index = status == '' and user_key(user, 'all') or status_key(user, status)
local from = before == '' and '+' or '(' .. before
local tasks = {}
for _, id in ipairs(redis.call('ZREVRANGEBYLEX', index, from, '-', 'LIMIT', 0, count)) do
  tasks[#tasks + 1] = redis.call('HGETALL', task_key(id))
end
return tasks
