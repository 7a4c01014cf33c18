-- Shared by every event script (prepended to each). ARGV[1] is the key
-- prefix, a Redis Cluster hash tag such as "{tollgate}": the stream lives
-- in the same slot as every other key of Tollgate's.
local P = ARGV[1]
