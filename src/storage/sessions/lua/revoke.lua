-- Ends one session of one user and tells every replica. ARGV: prefix, id,
-- user. Answers 1 if it existed and was that user's.
local id, user = ARGV[2], ARGV[3]
if redis.call('HGET', session_key(id), 'user') ~= user then
  return 0
end
forget(id, user)
redis.call('PUBLISH', REVOKED, id)
return 1
