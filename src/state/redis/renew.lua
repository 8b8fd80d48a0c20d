-- Acknowledge a revision and renew the replica's lease, atomically.
-- The lease is only extended for a replica on the current epoch holding the current
-- revision: a stale replica cannot keep serving by renewing.
-- KEYS: epoch, rev, leases, acks; ARGV: replica, epoch, applied revision, lease_ms,
--       acked channel
-- Returns {'ok', deadline_ms, rev}, {'behind', rev}, {'ahead', rev}, {'epoch', epoch}
-- or {'noepoch'}.
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  return {'noepoch'}
end
if epoch ~= ARGV[2] then
  return {'epoch', epoch}
end
local applied = tonumber(ARGV[3])
local rev = tonumber(redis.call('GET', KEYS[2]) or '0')
if applied > rev then
  -- The replica applied revisions Redis no longer holds (a failover lost them): those
  -- numbers will be reused by other changes, so an ack of them would tell the next
  -- writer a change is in force where it is not. Forget the ack; no lease; it resyncs.
  redis.call('HDEL', KEYS[4], ARGV[1])
  return {'ahead', rev}
end
-- Acks only grow, except one left above the revision by such a failover.
local previous = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '-1')
if applied > previous or previous > rev then
  redis.call('HSET', KEYS[4], ARGV[1], applied)
  redis.call('PUBLISH', ARGV[5], ARGV[1] .. ' ' .. applied)
end
if applied < rev then
  return {'behind', rev}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local deadline = now + tonumber(ARGV[4])
redis.call('ZADD', KEYS[3], deadline, ARGV[1])
-- Forget replicas gone for ten minutes, so the list does not grow forever.
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - 600000)) do
  redis.call('ZREM', KEYS[3], gone)
  redis.call('HDEL', KEYS[4], gone)
end
return {'ok', deadline, rev}
