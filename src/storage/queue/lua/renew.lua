-- ARGV: prefix, deadline, then pairs of task id and fence.
-- Answers 1 for each lease extended, 0 for each no longer current.
local deadline, renewed = ARGV[2], {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if leased(id, ARGV[i + 1]) then
    redis.call('ZADD', LEASES, deadline, id)
    renewed[#renewed + 1] = 1
  else
    renewed[#renewed + 1] = 0
  end
end
return renewed
