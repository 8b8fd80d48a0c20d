-- The changes after a replica's revision, from the log, atomically with the epoch and
-- the current revision (the replica checks that they are contiguous).
-- KEYS: epoch, rev, log; ARGV: first wanted revision
-- Returns {'ok', epoch, rev, id, tenant, mode, sha256, created_ms, expires_ms,
--         prev_sha256, prev_created_ms, prev_expires_ms, prev_until_ms, ...}
--         or {'noepoch'}. An entry written before `mode` existed gives it from `require`.
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  return {'noepoch'}
end
local rev = tonumber(redis.call('GET', KEYS[2]) or '0')
local out = {'ok', epoch, rev}
if rev >= tonumber(ARGV[1]) then
  for _, e in ipairs(redis.call('XRANGE', KEYS[3], ARGV[1] .. '-0', '+', 'COUNT', 1000)) do
    local m = {}
    for i = 1, #e[2], 2 do
      m[e[2][i]] = e[2][i + 1]
    end
    local mode = m.mode or ''
    if mode == '' then
      mode = (m.require == '1') and 'on' or 'off'
    end
    table.insert(out, e[1])
    table.insert(out, m.tenant or '')
    table.insert(out, mode)
    table.insert(out, m.sha256 or '')
    table.insert(out, m.created_ms or '')
    table.insert(out, m.expires_ms or '')
    table.insert(out, m.prev_sha256 or '')
    table.insert(out, m.prev_created_ms or '')
    table.insert(out, m.prev_expires_ms or '')
    table.insert(out, m.prev_until_ms or '')
  end
end
return out
