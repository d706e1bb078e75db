#!lua flags=allow-oom
-- Extend this worker's leases. ARGV: prefix, worker_id, lease_s, job_id...
-- Returns the job ids this worker lost: their lease lapsed and was reaped. A job settled
-- a moment ago (its done marker is set) is not lost, only finished.
local now = now_s()
local lost = {}
for i = 4, #ARGV do
  if redis.call('HGET', K.lease_owner(), ARGV[i]) == ARGV[2] then
    redis.call('ZADD', K.leases(), 'XX', now + tonumber(ARGV[3]), ARGV[i])
  elseif redis.call('EXISTS', K.done(ARGV[i])) == 0 then
    table.insert(lost, ARGV[i])
  end
end
return lost
