-- Shared by every session script (prepended to each). ARGV[1] is the key
-- prefix, a Redis Cluster hash tag such as "{tollgate}", so every key below
-- lives in one slot and each script is one atomic step on one node.
local P = ARGV[1]
-- zset: "<user>:<session>" by when the session lapses, for the sweep.
local EXPIRY = P .. ':session-expiry'
-- channel: the ids of revoked sessions, comma-separated, for the replicas
-- to drop their copies.
local REVOKED = P .. ':sessions-revoked'

-- hash: user, created, seen, absolute, refreshes (times in ms), and the
-- user's name, email and joined (their profile, which never changes).
local function session_key(id) return P .. ':session:' .. id end
-- set: the ids of a user's sessions, for revoking them all.
local function user_sessions_key(user) return P .. ':user-sessions:' .. user end

-- Removes a session and its index entries; returns 1 if it was there.
local function forget(id, user)
  redis.call('SREM', user_sessions_key(user), id)
  redis.call('ZREM', EXPIRY, user .. ':' .. id)
  return redis.call('DEL', session_key(id))
end

-- Indexes a session lapsing at `expires` (ms), as seen at `now`. Redis
-- also expires its keys `grace` ms after that, so that nothing outlives a
-- session should no replica be left to sweep it.
local function keep_until(id, user, expires, now, grace)
  local backstop = math.max(expires - now, 0) + grace
  redis.call('ZADD', EXPIRY, expires, user .. ':' .. id)
  redis.call('PEXPIRE', session_key(id), backstop)
  local set = user_sessions_key(user)
  redis.call('SADD', set, id)
  if redis.call('PTTL', set) < backstop then
    redis.call('PEXPIRE', set, backstop)
  end
end
