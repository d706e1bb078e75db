#!lua flags=allow-oom
-- Publish a job's one outcome, idempotently: only the call that sets the job's `done`
-- marker (SET NX) adds the result to the stream, so a retried job never answers twice.
-- Every call clears the job's lease, metadata and image.
-- ARGV: prefix, job_id, reply_to ('' = nowhere to answer), result_json, done_ttl_s,
--       retention_ms, dead_letter_entry ('' = none), max_dead_letters
-- Returns 1 if this call decided the job's outcome (and published it, when there is
-- somewhere to answer), else 0: another call settled it first.
--
-- The stream is trimmed by age (MINID), not length: MAXLEN would silently drop results a
-- bot has not read or acknowledged yet, however recent; MINID drops only results older
-- than the retention, which no bot could still deliver (interaction tokens last 15 min).
local jid = ARGV[2]
local first = redis.call('SET', K.done(jid), State.done, 'NX', 'EX', ARGV[5])
local decided = 0
if first then
  decided = 1
  uncount(jid)
  if ARGV[3] ~= '' then
    local t = redis.call('TIME')
    local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local stream = K.results(ARGV[3])
    redis.call('XADD', stream, 'MINID', '~', now_ms - tonumber(ARGV[6]), '*', 'r', ARGV[4])
    -- A bot instance gone for good leaves no stream behind.
    redis.call('PEXPIRE', stream, tonumber(ARGV[6]) * 2)
  end
  if ARGV[7] ~= '' then
    redis.call('LPUSH', K.dead_letter(), ARGV[7])
    redis.call('LTRIM', K.dead_letter(), 0, tonumber(ARGV[8]) - 1)
  end
end
forget(jid)
return decided
