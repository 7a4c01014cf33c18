-- ARGV: prefix, what ('retry' or 'cancel'), user ('' for every user's),
--       status ('' for all), kind ('' for all), the id to start after (''
--       for the first), most tasks to look at, now, when a task cancelled
--       now expires, max_running.
-- Retries the dead and cancelled tasks, or cancels the waiting ones, among
-- the next `most` tasks the filter matches, in id order. Answers {matched,
-- changed, the last id looked at ('' when none are left), and for each
-- task cancelled {id, user, kind, attempts}}.
local what, user, status, kind = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local most, now, expires, max_running = tonumber(ARGV[7]), ARGV[8], ARGV[9], tonumber(ARGV[10])
local index = user == '' and TASKS or all_key(user)
local from = ARGV[6] == '' and '-' or '(' .. ARGV[6]
local ids = redis.call('ZRANGEBYLEX', index, from, '+', 'LIMIT', 0, most)
local matched, changed, cancelled = 0, 0, {}
for _, id in ipairs(ids) do
  local t = redis.call('HMGET', task_key(id), 'user', 'status', 'kind', 'expires_at', 'owner_gone',
    'attempts')
  local live = t[1] and not (t[4] and tonumber(t[4]) <= tonumber(now))
  if live and (status == '' or t[2] == status) and (kind == '' or t[3] == kind) then
    matched = matched + 1
    if what == 'retry' and retriable(t[2], t[5]) then
      requeue(t[1], id, t[2], now, max_running)
      changed = changed + 1
    elseif what == 'cancel' and WAITING[t[2]] then
      cancel_waiting(t[1], id, t[2], now, expires)
      changed = changed + 1
      cancelled[#cancelled + 1] = { id, t[1], t[3], t[6] }
    end
  end
end
return { matched, changed, #ids < most and '' or ids[#ids], cancelled }
