-- How many sessions each user holds. ARGV: prefix, then user ids.
local counts = {}
for i = 2, #ARGV do
  counts[#counts + 1] = redis.call('SCARD', user_sessions_key(ARGV[i]))
end
return counts
