-- ARGV: prefix, user ('' for every user's), status ('' for all), kind ('' for
--       all), before ('' for none), count, most tasks to look at, most bytes
--       of fields in a page.
-- Answers {tasks, cursor}: up to `count` tasks, newest first (ids are UUID
-- v7, so their order is creation order, and the indexes keep them sorted
-- by id), of `user`, in `status` and of `kind` where given. Narrowed by
-- status or kind, at most `most` tasks are looked at; `cursor` is then the
-- last one looked at, where the next call goes on, or '' if none were
-- left. Once the tasks taken hold more than `max_bytes`, the page ends
-- with the last of them as the cursor.
local user, status, kind, before = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local count, most, max_bytes = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local index = user == '' and TASKS or all_key(user)
local from = before == '' and '+' or '(' .. before
local tasks, cursor, bytes = {}, '', 0

-- Takes a task into the page; answers whether the page is full in bytes.
-- An id whose task is gone (left by a version that did not keep the index
-- of every task) is dropped from that index instead.
local function take(id)
  local task = redis.call('HGETALL', task_key(id))
  if #task == 0 then
    redis.call('ZREM', TASKS, id)
    return false
  end
  tasks[#tasks + 1] = task
  for k = 2, #task, 2 do bytes = bytes + #task[k] end
  return bytes > max_bytes
end

if status == '' and kind == '' then
  for _, id in ipairs(redis.call('ZREVRANGEBYLEX', index, from, '-', 'LIMIT', 0, count)) do
    if take(id) and #tasks < count then return { tasks, id } end
  end
  return { tasks, cursor }
end
local ids = redis.call('ZREVRANGEBYLEX', index, from, '-', 'LIMIT', 0, most)
for i, id in ipairs(ids) do
  local t = redis.call('HMGET', task_key(id), 'status', 'kind')
  if (status == '' or t[1] == status) and (kind == '' or t[2] == kind) then
    local full = take(id)
    if #tasks == count then return { tasks, '' } end
    if full then return { tasks, id } end
  end
  if i == most then cursor = id end
end
return { tasks, cursor }
