-- Counts a try for a key unless it already has `limit` in the window.
-- ARGV: prefix, key, limit, now (ms), window (ms), id.
-- Returns -1 when counted, else the milliseconds until a place frees.
local key = ARGV[1] .. ':tries:' .. ARGV[2]
local limit, now, window = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local held = redis.call('ZCARD', key)
if held >= limit then
  -- The try that frees a place is the one `limit` tries back.
  local freeing = redis.call('ZRANGE', key, held - limit, held - limit, 'WITHSCORES')
  return math.max(tonumber(freeing[2]) + window - now, 1)
end
redis.call('ZADD', key, now, ARGV[6])
redis.call('PEXPIRE', key, window)
return -1
