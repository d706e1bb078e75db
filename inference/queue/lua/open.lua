-- Open a request's record (inference.queue.records), once: its JSON, how many items it
-- has (each gets one outcome: its job's, or one recorded by the bot), and the bot
-- instance told when the last outcome is in. With an instance, the request is also listed
-- as opening until the bot has queued it (`close`), so a bot that dies in between finds
-- it again when it starts.
-- ARGV: prefix, request_id, data, items, reply_to, ttl_s, opening instance ('' = none),
--       opened_at (the bot's clock, which `orphaned` compares it with)
-- Returns 1, or 0 when a record of that id exists already.
local rid, n = ARGV[2], tonumber(ARGV[4])
local rec = K.request_record(rid)
if redis.call('EXISTS', rec) == 1 then return 0 end
redis.call('HSET', rec, 'data', ARGV[3], 'n', n, 'left', n, 'to', ARGV[5])
redis.call('EXPIRE', rec, ARGV[6])
if ARGV[7] ~= '' then
  local opening = K.opening(ARGV[7])
  redis.call('ZADD', opening, ARGV[8], rid)
  redis.call('EXPIRE', opening, ARGV[6])
end
return 1
