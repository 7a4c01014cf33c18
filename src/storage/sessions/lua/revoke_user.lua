-- Ends a user's sessions but one. ARGV: prefix, user, kept id ('' for none).
-- Answers how many ended.
local user, kept = ARGV[2], ARGV[3]
local ended = 0
for _, id in ipairs(redis.call('SMEMBERS', user_sessions_key(user))) do
  if id ~= kept then
    ended = ended + forget(id, user)
  end
end
return ended
