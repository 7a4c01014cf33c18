-- ARGV: prefix, user, status ('' for all), before ('' for none), count,
--       most tasks to look at.
-- Answers {tasks, cursor}: up to `count` tasks, newest first (ids are UUID
-- v7, so their order is creation order, and the index keeps them sorted
-- by id), in `status` if given. With a status, at most `most` tasks are
-- looked at; `cursor` is then the last one looked at, where the next call
-- goes on, or '' if none were left.
local user, status, before = ARGV[2], ARGV[3], ARGV[4]
local count, most = tonumber(ARGV[5]), tonumber(ARGV[6])
local from = before == '' and '+' or '(' .. before
local tasks, cursor = {}, ''
if status == '' then
  for _, id in ipairs(redis.call('ZREVRANGEBYLEX', all_key(user), from, '-', 'LIMIT', 0, count)) do
    tasks[#tasks + 1] = redis.call('HGETALL', task_key(id))
  end
  return { tasks, cursor }
end
local ids = redis.call('ZREVRANGEBYLEX', all_key(user), from, '-', 'LIMIT', 0, most)
for i, id in ipairs(ids) do
  if redis.call('HGET', task_key(id), 'status') == status then
    tasks[#tasks + 1] = redis.call('HGETALL', task_key(id))
    if #tasks == count then return { tasks, '' } end
  end
  if i == most then cursor = id end
end
return { tasks, cursor }
