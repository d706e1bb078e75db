-- Fair batched dispatch: take up to B jobs, round robin across guilds (a guild of weight
-- w gets up to w jobs per turn), and across users within a guild; lease each one.
-- ARGV: prefix, worker_id, batch_size, lease_s, capabilities ('*' or 'caption,ocr,...'),
--       max_scan
-- Returns {now, jid, data, attempt, expired (0/1), enqueued_at, ...}.
--
-- Jobs past their deadline are leased and returned flagged `expired` (the worker answers
-- them "timed out" without running them); they do not count toward B. A job whose task
-- this worker cannot serve stays at the head of its user's line for a worker that can;
-- if none comes it expires at its deadline, so nothing waits forever. `max_scan` bounds
-- the work one call does when the line is full of expired or cancelled ids.
local wid, B, lease_s = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local max_scan = tonumber(ARGV[6])
local caps = {}
for t in string.gmatch(ARGV[5], '[^,]+') do caps[t] = true end
local now = now_s()
local out = {fmt(now)}
local taken, scanned = 0, 0

local function lease(jid, f, expired)
  local a = redis.call('HINCRBY', K.job(jid), 'a', 1)
  redis.call('ZADD', K.leases(), now + lease_s, jid)
  redis.call('HSET', K.lease_owner(), jid, wid)
  table.insert(out, jid)
  table.insert(out, f[1])
  table.insert(out, a)
  table.insert(out, expired)
  table.insert(out, f[4] or '')
end

-- The served user is at the head of guild_users(g): pop its job and rotate the user to
-- the back (or drop it when its line is now empty).
local function pop_head(g, u)
  local uq, gu = K.user_queue(g, u), K.guild_users(g)
  redis.call('LPOP', uq)
  count_queued(g, -1)
  if redis.call('LLEN', uq) == 0 then
    redis.call('LPOP', gu)
  else
    redis.call('LMOVE', gu, gu, 'LEFT', 'RIGHT')
  end
end

local function serve_guild(g, quota)
  local gu = K.guild_users(g)
  local got, blocked = 0, 0
  while got < quota and scanned < max_scan do
    local u = redis.call('LINDEX', gu, 0)
    if not u or blocked >= redis.call('LLEN', gu) then break end
    local jid = redis.call('LINDEX', K.user_queue(g, u), 0)
    scanned = scanned + 1
    if not jid then
      redis.call('LPOP', gu)  -- repair a broken invariant rather than loop on it
    else
      local f = redis.call('HMGET', K.job(jid), 'data', 't', 'dl', 'eq')
      local dl = tonumber(f[3] or '')
      if not f[1] then
        pop_head(g, u)  -- finished or cancelled while it waited: a stale id
      elseif dl and dl < now then
        pop_head(g, u)
        lease(jid, f, 1)
      elseif f[2] and not caps['*'] and not caps[f[2]] then
        blocked = blocked + 1
        redis.call('LMOVE', gu, gu, 'LEFT', 'RIGHT')
      else
        pop_head(g, u)
        lease(jid, f, 0)
        got, taken, blocked = got + 1, taken + 1, 0
      end
    end
  end
  return got
end

local ring = K.guild_ring()
local stalled = 0
while taken < B and scanned < max_scan do
  local g = redis.call('LINDEX', ring, 0)
  if not g then break end
  local got = serve_guild(g, math.min(weight_of(g), B - taken))
  if redis.call('LLEN', K.guild_users(g)) == 0 then
    redis.call('LPOP', ring)
  else
    redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
  end
  if got == 0 then stalled = stalled + 1 else stalled = 0 end
  -- a whole turn of the ring without taking anything: nothing here for this worker
  if stalled >= redis.call('LLEN', ring) then break end
end
return out
