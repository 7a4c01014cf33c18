-- Ends a user's sessions but one, and tells every replica which.
-- ARGV: prefix, user, kept id ('' for none). Answers the ids that ended.
local user, kept = ARGV[2], ARGV[3]
local ended = {}
for _, id in ipairs(redis.call('SMEMBERS', user_sessions_key(user))) do
  if id ~= kept and forget(id, user) == 1 then
    ended[#ended + 1] = id
  end
end
if #ended > 0 then
  redis.call('PUBLISH', REVOKED, table.concat(ended, ','))
end
return ended
