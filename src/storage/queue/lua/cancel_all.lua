-- ARGV: prefix, user, now, expires_at, most tasks to look at, the id to
-- start after ('' for the first).
-- Cancels the user's waiting tasks among the next `most` of theirs, in id
-- order, as the user is deleted: every task looked at is marked so that no
-- operator's retry queues it again. Answers {cancelled, the last id looked at ('' when none are left)}.
local user, now, most = ARGV[2], ARGV[3], tonumber(ARGV[5])
local from = ARGV[6] == '' and '-' or '(' .. ARGV[6]
local ids = redis.call('ZRANGEBYLEX', all_key(user), from, '+', 'LIMIT', 0, most)
local cancelled = 0
for _, id in ipairs(ids) do
  local status = redis.call('HGET', task_key(id), 'status')
  -- The user is going: none of their tasks may be queued again.
  redis.call('HSET', task_key(id), 'owner_gone', 1)
  if WAITING[status] then
    cancel_waiting(user, id, status, now, ARGV[4])
    cancelled = cancelled + 1
  end
end
return { cancelled, #ids < most and '' or ids[#ids] }
