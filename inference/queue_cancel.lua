-- Cancel a job. ARGV: prefix, job_id, done_ttl_s
-- Returns 'cancelled' (removed from the line), 'running' (a worker has it: its result
-- will be dropped) or 'unknown' (already answered, or no such job).
local jid = ARGV[2]
local f = redis.call('HMGET', K.job(jid), 'data', 'g', 'u')
if not f[1] then return 'unknown' end
if not redis.call('SET', K.done(jid), 'cancelled', 'NX', 'EX', ARGV[3]) then
  return 'unknown'
end
uncount(jid)
if redis.call('ZSCORE', K.leases(), jid) then return 'running' end
if f[2] and f[3] then unqueue(jid, f[2], f[3]) end
redis.call('DEL', K.job(jid), K.image(jid))
return 'cancelled'
