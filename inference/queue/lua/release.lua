#!lua flags=allow-oom
-- Hand back jobs this worker took but never started (shutdown, or the rest of a split
-- batch). They go to the front of their line and this take does not count as an attempt.
-- A job cancelled meanwhile ends here: nothing else would ever delete its hash and image.
-- ARGV: prefix, worker_id, job_id... (in the order taken). Returns how many went back.
local n = 0
for i = #ARGV, 3, -1 do
  local jid = ARGV[i]
  if redis.call('HGET', K.lease_owner(), jid) == ARGV[2] then
    local f = redis.call('HMGET', K.job(jid), 'data', 'g', 'u')
    if not f[1] or redis.call('EXISTS', K.done(jid)) == 1 then
      forget(jid)
    elseif f[2] and f[3] then
      drop_lease(jid)
      bump_attempt(jid, -1)
      redis.call('HDEL', K.job(jid), 'r')  -- not run: blameless, whatever its batch did
      enqueue(jid, f[2], f[3], true)
      n = n + 1
    end
    -- else: no line to go back to; the lease lapses and the reaper dead-letters it
  end
end
if n > 0 then wake() end
return n
