#!lua flags=allow-oom
-- Cancel a job. ARGV: prefix, job_id, done_ttl_s
-- Returns Cancel.cancelled (removed from the line), Cancel.running (a worker has it: its
-- result will be dropped) or Cancel.unknown (already answered, or no such job).
local jid = ARGV[2]
local f = redis.call('HMGET', K.job(jid), 'data', 'g', 'u')
if not f[1] then return Cancel.unknown end
if not redis.call('SET', K.done(jid), State.cancelled, 'NX', 'EX', ARGV[3]) then
  return Cancel.unknown
end
uncount(jid)
if redis.call('ZSCORE', K.leases(), jid) then return Cancel.running end
if f[2] and f[3] then unqueue(jid, f[2], f[3]) end
drop_job(jid)
return Cancel.cancelled
