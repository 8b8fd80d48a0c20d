-- What GET /admin/v1/cluster shows, atomically.
-- KEYS: epoch, rev, leases, acks
-- Returns {epoch or '', rev, now_ms, {replica, deadline_ms, ...}, {replica, applied, ...}}
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
return {redis.call('GET', KEYS[1]) or '', tonumber(redis.call('GET', KEYS[2]) or '0'), now,
  redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES'), redis.call('HGETALL', KEYS[4])}
