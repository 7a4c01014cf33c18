-- Removes up to `batch` sessions lapsed by `now`. ARGV: prefix, now, batch.
-- Answers how many it looked at; fewer than `batch` means none are left.
local lapsed = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(lapsed) do
  local user, id = string.match(member, '^([^:]+):(.+)$')
  forget(id, user)
end
return #lapsed
