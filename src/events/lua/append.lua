-- Appends events to the stream, in order, trimming it to about `max_len`.
-- ARGV: prefix, stream, max_len, then id, type, at, data for each event.
-- Answers how many were appended.
local stream = P .. ':' .. ARGV[2]
local max_len = ARGV[3]
local appended = 0
for i = 4, #ARGV, 4 do
  redis.call('XADD', stream, 'MAXLEN', '~', max_len, '*',
    'id', ARGV[i], 'type', ARGV[i + 1], 'at', ARGV[i + 2], 'data', ARGV[i + 3])
  appended = appended + 1
end
return appended
