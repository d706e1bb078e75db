#!lua flags=allow-oom
-- Publish a job's one outcome, idempotently: only the call that sets the job's `done`
-- marker (SET NX) records it, so a retried job never answers twice. A job of a request
-- (fields rq, ri) records its outcome in the request's record, and the outcome that
-- completes the request puts one entry naming it on the bot's stream (lib.lua
-- request_outcome); a job of no request (a version 1 job, or one sent alone by a tool)
-- puts its result on the stream itself. Every call clears the job's lease and metadata
-- and gives back its pin on its picture.
-- ARGV: prefix, job_id, reply_to ('' = nowhere to answer), result_json, done_ttl_s,
--       retention_ms, dead_letter_entry ('' = none), max_dead_letters, dead_letter_ttl_s
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
  local rq = redis.call('HMGET', K.job(jid), 'rq', 'ri')
  if rq[1] and ARGV[4] ~= '' then
    request_outcome(rq[1], rq[2], ARGV[4], tonumber(ARGV[6]))
  elseif ARGV[3] ~= '' then
    local t = redis.call('TIME')
    local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local stream = K.results(ARGV[3])
    redis.call('XADD', stream, 'MINID', '~', now_ms - tonumber(ARGV[6]), '*', 'r', ARGV[4])
    -- A bot instance gone for good leaves no stream behind.
    redis.call('PEXPIRE', stream, tonumber(ARGV[6]) * 2)
  end
  if ARGV[7] ~= '' then
    local dead, ttl = K.dead_letter(), tonumber(ARGV[9])
    redis.call('LPUSH', dead, ARGV[7])
    redis.call('LTRIM', dead, 0, tonumber(ARGV[8]) - 1)
    if ttl then
      -- Newest first: drop the oldest while they are past their time (a few per call),
      -- and the whole list when no new letter came for that long.
      local t = redis.call('TIME')
      for _ = 1, 16 do
        local oldest = redis.call('LINDEX', dead, -1)
        local ok, entry = pcall(cjson.decode, oldest or '')
        local at = ok and type(entry) == 'table' and tonumber(entry['at'])
        if not at or at >= tonumber(t[1]) - ttl then break end
        redis.call('RPOP', dead)
      end
      redis.call('EXPIRE', dead, ttl)
    end
  end
end
forget(jid)
return decided
