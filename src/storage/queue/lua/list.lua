-- ARGV: prefix, user, status ('' for all), before ('' for none), count,
--       most tasks to look at, most bytes of fields in a page.
-- Answers {tasks, cursor}: up to `count` tasks, newest first (ids are UUID
-- v7, so their order is creation order, and the index keeps them sorted
-- by id), in `status` if given. With a status, at most `most` tasks are
-- looked at; `cursor` is then the last one looked at, where the next call
-- goes on, or '' if none were left. Once the tasks taken hold more than
-- `max_bytes`, the page ends with the last of them as the cursor.
local user, status, before = ARGV[2], ARGV[3], ARGV[4]
local count, most, max_bytes = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local from = before == '' and '+' or '(' .. before
local tasks, cursor, bytes = {}, '', 0

-- Takes a task into the page; answers whether the page is full in bytes.
local function take(id)
  local task = redis.call('HGETALL', task_key(id))
  tasks[#tasks + 1] = task
  for k = 2, #task, 2 do bytes = bytes + #task[k] end
  return bytes > max_bytes
end

if status == '' then
  for _, id in ipairs(redis.call('ZREVRANGEBYLEX', all_key(user), from, '-', 'LIMIT', 0, count)) do
    if take(id) and #tasks < count then return { tasks, id } end
  end
  return { tasks, cursor }
end
local ids = redis.call('ZREVRANGEBYLEX', all_key(user), from, '-', 'LIMIT', 0, most)
for i, id in ipairs(ids) do
  if redis.call('HGET', task_key(id), 'status') == status then
    local full = take(id)
    if #tasks == count then return { tasks, '' } end
    if full then return { tasks, id } end
  end
  if i == most then cursor = id end
end
return { tasks, cursor }
