-- A job's state. ARGV: prefix, job_id
-- Returns {state, place}: 'queued' with its estimated place, 'running', 'done',
-- 'cancelled' or 'unknown' (place 0).
local jid = ARGV[2]
local done = redis.call('GET', K.done(jid))
if done == 'cancelled' then return {'cancelled', 0} end
if done then return {'done', 0} end
local f = redis.call('HMGET', K.job(jid), 'g', 'u')
if not f[1] or not f[2] then return {'unknown', 0} end
if redis.call('ZSCORE', K.leases(), jid) then return {'running', 0} end
local idx = redis.call('LPOS', K.user_queue(f[1], f[2]), jid)
if not idx then return {'unknown', 0} end
return {'queued', place_of(f[1], f[2], idx)}
