#!lua flags=allow-oom
-- Mark the jobs of a batch as started on the engine, just before it runs: if the worker
-- dies now, these jobs (and only these) were in the batch that killed it. Jobs taken
-- ahead and never started carry no mark, so the reaper puts them back blameless.
-- ARGV: prefix, worker_id, job_id... (the whole batch). Field `r` holds the batch's size:
-- a job that crashes its worker in a batch of one is certainly to blame.
-- Returns how many jobs were marked (those this worker still holds).
local n = 0
local size = #ARGV - 2
for i = 3, #ARGV do
  local jid = ARGV[i]
  if redis.call('HGET', K.lease_owner(), jid) == ARGV[2]
      and redis.call('EXISTS', K.job(jid)) == 1 then
    redis.call('HSET', K.job(jid), 'r', size)
    n = n + 1
  end
end
return n
