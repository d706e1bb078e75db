-- Submit one job atomically, checking the caps first. `guild` is the fairness unit (a
-- guild, or in DMs the person: see keys.fairness_unit); `user` the person. The job's
-- picture is the one kept under its digest (memory.lua's store, put there first): it is
-- pinned there while the job needs it, and lives at least image_ttl_s from now.
-- ARGV: prefix, job_id, data, guild, user, task, deadline_at, picture digest, image_ttl_s,
--       max_pending, max_guild, max_user, require_worker (1/0), max_queued_bytes,
--       request_id ('' = none), item index
-- Returns {status, place, exact}: status Submit.ok (with the place in line, exact 1 or
-- about 0), Submit.duplicate or an error code from E.
local jid, data, g, u = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now = now_s()
if ARGV[13] == '1' and redis.call('ZCOUNT', K.workers(), now, '+inf') == 0 then
  return {E.no_worker, 0}
end
if tonumber(redis.call('GET', K.pending()) or '0') >= tonumber(ARGV[10]) then
  return {E.queue_full, 0}
end
if tonumber(redis.call('HGET', K.guild_pending(), g) or '0') >= tonumber(ARGV[11]) then
  return {E.guild_over_cap, 0}
end
-- A person's cap counts their jobs in every guild and DM (field `cu` records that the
-- job was counted under the user alone; older versions counted it under guild:user).
if tonumber(redis.call('HGET', K.user_pending(), u) or '0') >= tonumber(ARGV[12]) then
  return {E.user_over_cap, 0}
end
if redis.call('EXISTS', K.job(jid), K.done(jid)) > 0 then
  return {Submit.duplicate, 0}
end
-- The pictures of queued and running jobs, within their byte budget (field `b` of each
-- job: what it added, taken off again when its picture is deleted, see drop_job).
local picture = K.stash('picture', ARGV[8])
local size = redis.call('STRLEN', picture)
if size == 0 then return {E.picture_expired, 0} end
local queued_bytes = tonumber(redis.call('GET', K.queued_bytes()) or '0') or 0
if queued_bytes + size > (tonumber(ARGV[14]) or math.huge) then
  return {E.queue_busy, 0}
end
redis.call('HSET', K.job(jid), 'data', data, 'g', g, 'u', u, 't', ARGV[6], 'dl', ARGV[7],
  'eq', fmt(now), 'a', 0, 'c', 1, 'cu', 1, 'b', size, 'p', ARGV[8])
if ARGV[15] ~= '' then redis.call('HSET', K.job(jid), 'rq', ARGV[15], 'ri', ARGV[16]) end
redis.call('INCRBY', K.queued_bytes(), size)
redis.call('HINCRBY', K.picture_pins(), ARGV[8], 1)
redis.call('EXPIRE', picture, ARGV[9], 'GT')
redis.call('INCR', K.pending())
redis.call('HINCRBY', K.guild_pending(), g, 1)
redis.call('HINCRBY', K.user_pending(), u, 1)
enqueue(jid, g, u, false)
local place = place_of(g, u, redis.call('LLEN', K.user_queue(g, u)) - 1)
wake()
return {Submit.ok, place[1], place[2]}
