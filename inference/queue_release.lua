-- Hand back jobs this worker took but never started (shutdown, or the rest of a split
-- batch). They go to the front of their line and this take does not count as an attempt.
-- ARGV: prefix, worker_id, job_id... (in the order taken). Returns how many went back.
local n = 0
for i = #ARGV, 3, -1 do
  local jid = ARGV[i]
  if redis.call('HGET', K.lease_owner(), jid) == ARGV[2] then
    drop_lease(jid)
    local f = redis.call('HMGET', K.job(jid), 'g', 'u')
    if f[1] and f[2] and redis.call('EXISTS', K.done(jid)) == 0 then
      redis.call('HINCRBY', K.job(jid), 'a', -1)
      requeue_front(jid, f[1], f[2])
      n = n + 1
    end
  end
end
if n > 0 then wake() end
return n
