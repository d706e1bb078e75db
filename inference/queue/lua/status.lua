-- A job's state. ARGV: prefix, job_id
-- Returns {state, place, exact}: State.queued with its estimated place (exact 1, or 0 for
-- "about"), else State.running, State.done, State.cancelled or State.unknown with place 0. A done marker that is not
-- State.cancelled means done (older versions wrote 'published').
local jid = ARGV[2]
local done = redis.call('GET', K.done(jid))
if done == State.cancelled then return {State.cancelled, 0} end
if done then return {State.done, 0} end
local f = redis.call('HMGET', K.job(jid), 'g', 'u')
if not f[1] or not f[2] then return {State.unknown, 0} end
if redis.call('ZSCORE', K.leases(), jid) then return {State.running, 0} end
local idx = redis.call('LPOS', K.user_queue(f[1], f[2]), jid)
if not idx then return {State.unknown, 0} end
local place = place_of(f[1], f[2], idx)
return {State.queued, place[1], place[2]}
