-- Ends one session and tells every replica. ARGV: prefix, id. Answers 1 if
-- it existed.
local id = ARGV[2]
local user = redis.call('HGET', session_key(id), 'user')
if not user then
  return 0
end
forget(id, user)
redis.call('PUBLISH', REVOKED, id)
return 1
