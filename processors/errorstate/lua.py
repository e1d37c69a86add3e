"""The Lua scripts of the shared error state: each applies a whole batch's updates inside Redis,
atomically, in one call, so N replicas see the state one replica would have (Redis orders the
batches) at one round trip per batch. ``tests/test_shared_state.py`` runs the same random
observations through these scripts and the in-process trackers and compares every answer.

Keys are built inside the scripts from the prefix passed in ARGV (``ep:`` episodes, ``b:`` burn
slots, ``bn:`` a service's newest telemetry time, ``fm:``/``fs:``/``fc:`` flood counts, ``sd:``
trace decisions for late spans, ``is:``/``ic:`` incident window slots, ``in`` its newest
telemetry time, ``ia:``/``io`` incident claims): one Redis, or independent Redis shards chosen
client-side; not a Redis Cluster (no hash tags). ``tests/test_shared_late.py`` compares the
decision and incident scripts with ``sample`` and ``IncidentTracker`` the same way.
"""

from __future__ import annotations

# Mirrors ``EpisodeTracker.observe`` / ``_kind`` (episodes.py) line for line. Masks are doubles
# (exact below 2^53, so ``flap_window`` <= 52), shifts are multiplications.
# ARGV: ttl, persistent_min_buckets, quiet_buckets, flap_window, flap_start, flap_end,
#       reopen_window_buckets, reopen_count, deterministic_min_occurrences, max_starts,
#       then per KEYS[j]: bucket, deterministic (0/1), retry_failed (0/1).
# Reply per observation: "kind,new_episode,new_fingerprint,flap_share" (kind t/i/p).
EPISODES = r"""
local ttl = tonumber(ARGV[1])
local pmin, quiet, n = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local fstart, fend = tonumber(ARGV[5]), tonumber(ARGV[6])
local reopen_w, reopen_c, detmin = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local max_starts = tonumber(ARGV[10])
local base = 10
local weights, wsum = {}, 0
for i = 0, n - 2 do weights[i] = 0.8 + 0.4 * (i / math.max(1, n - 2)) end
for i = 0, n - 2 do wsum = wsum + weights[i] end
local full = 2 ^ n
local function bit(mask, i) return math.floor(mask / 2 ^ i) % 2 end
local function share(mask)
  local changed = 0
  for i = 0, n - 2 do
    if bit(mask, n - 1 - i) ~= bit(mask, n - 2 - i) then changed = changed + weights[i] end
  end
  return changed / wsum
end
local out = {}
for j = 1, #KEYS do
  local key = KEYS[j]
  local at = base + 3 * (j - 1)
  local b = tonumber(ARGV[at + 1])
  local det, rf = ARGV[at + 2] == '1', ARGV[at + 3] == '1'
  local h = redis.call('HMGET', key, 'f', 'l', 'e', 'p', 'm', 'o', 'r', 'x', 's')
  local f, l, e, p, m, o, r, x
  local starts = {}
  local newfp, newep = 0, 0
  if not h[1] then
    f, l, e, m, o, r, x = b, b, b, 1, 0, 0, 0
    starts[1] = b
    newfp, newep = 1, 1
  else
    f, l, e = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
    if h[4] then p = tonumber(h[4]) end
    m, o, r, x = tonumber(h[5]), tonumber(h[6]), tonumber(h[7]), tonumber(h[8])
    for s in string.gmatch(h[9], '[^,]+') do starts[#starts + 1] = tonumber(s) end
    if b > l then
      local gap = b - l
      m = (m * 2 ^ math.min(gap, n) + 1) % full
      if gap > 1 then
        p, e, o, r = l, b, 0, 0
        starts[#starts + 1] = b
        if #starts > max_starts then table.remove(starts, 1) end
        newep = 1
      end
      l = b
    elseif b < l and l - b < n then
      if bit(m, l - b) == 0 then m = m + 2 ^ (l - b) end
    end
  end
  o = o + 1
  if rf then r = 1 end
  local sh = share(m)
  if sh >= fstart or (x == 1 and sh >= fend) then x = 1 else x = 0 end
  local kind
  if x == 1 or (p ~= nil and e - p <= quiet) then
    kind = 'i'
  else
    if #starts >= reopen_c then
      local horizon, reopens = l - reopen_w, 0
      for _, s in ipairs(starts) do
        if s >= horizon and s ~= f then reopens = reopens + 1 end
      end
      if reopens >= reopen_c then kind = 'i' end
    end
    if not kind then
      if l - e + 1 >= pmin or (det and (r == 1 or o >= detmin)) then kind = 'p' else kind = 't' end
    end
  end
  local fields = {'f', f, 'l', l, 'e', e, 'm', string.format('%.0f', m), 'o', o, 'r', r, 'x', x,
                  's', table.concat(starts, ',')}
  if p ~= nil then fields[#fields + 1] = 'p'; fields[#fields + 1] = p end
  redis.call('HSET', key, unpack(fields))
  redis.call('EXPIRE', key, ttl)
  out[j] = kind .. ',' .. newep .. ',' .. newfp .. ',' .. string.format('%.17g', sh)
end
return out
"""

# Burn-rate windows: each window's 12 slots are hashes {r: requests, e: errors} kept for two
# window lengths; ``bn:`` holds a service's newest telemetry time (the windows end there).
# ARGV: prefix, ttl, n_durations, durations..., n_records, (service, second, requests, errors)...,
#       n_services, services...
# Reply per queried service: {now or "", requests, errors per duration...} (empty: never seen).
BURN = r"""
local prefix, ttl = ARGV[1], tonumber(ARGV[2])
local nd = tonumber(ARGV[3])
local durations = {}
for i = 1, nd do durations[i] = tonumber(ARGV[3 + i]) end
local at = 4 + nd
local nr = tonumber(ARGV[at])
for i = 0, nr - 1 do
  local svc = ARGV[at + 1 + 4 * i]
  local ts = tonumber(ARGV[at + 2 + 4 * i])
  local req, err = tonumber(ARGV[at + 3 + 4 * i]), tonumber(ARGV[at + 4 + 4 * i])
  for k, d in ipairs(durations) do
    local slot_len = d / 12
    local key = prefix .. 'b:' .. svc .. '\0' .. ARGV[3 + k] .. '\0' .. math.floor(ts / slot_len)
    if req ~= 0 then redis.call('HINCRBY', key, 'r', req) end
    if err ~= 0 then redis.call('HINCRBY', key, 'e', err) end
    redis.call('EXPIRE', key, math.ceil(2 * d))
  end
  local nkey = prefix .. 'bn:' .. svc
  local now = tonumber(redis.call('GET', nkey))
  if not now or ts > now then redis.call('SET', nkey, ARGV[at + 2 + 4 * i], 'EX', ttl) end
end
at = at + 1 + 4 * nr
local ns = tonumber(ARGV[at])
local out = {}
for i = 1, ns do
  local svc = ARGV[at + i]
  local now = tonumber(redis.call('GET', prefix .. 'bn:' .. svc))
  local row = {}
  if now then
    row[1] = string.format('%.17g', now)
    for k, d in ipairs(durations) do
      local slot_len = d / 12
      local newest = math.floor(now / slot_len)
      local req, err = 0, 0
      for slot = newest - 11, newest do
        local v = redis.call('HMGET', prefix .. 'b:' .. svc .. '\0' .. ARGV[3 + k] .. '\0' .. slot, 'r', 'e')
        req = req + (tonumber(v[1]) or 0)
        err = err + (tonumber(v[2]) or 0)
      end
      row[#row + 1] = req
      row[#row + 1] = err
    end
  end
  out[i] = row
end
return out
"""

# Flood budgets (``FloodLimiter.admit``): per fingerprint, traces seen per telemetry minute,
# kept per rate slot, and the dropped count carried onto the next kept trace. One admission as a
# Lua function, shared by ``FLOOD`` and ``DECISIONS`` (the budgets are the same keys in both).
# Returns the adjusted count (0: dropped) and the reason (1 error, 2 flood, 0 dropped).
_ADMIT = r"""
local function admit(prefix, ttl, bucket_ttl, first_n, per_slot, fp, minute, slot)
  local mkey = prefix .. 'fm:' .. fp .. '\0' .. minute
  local seen = redis.call('INCR', mkey)
  if seen == 1 then redis.call('EXPIRE', mkey, bucket_ttl) end
  local reason = 0
  if seen <= first_n then
    reason = 1
  elseif per_slot > 0 then
    local skey = prefix .. 'fs:' .. fp .. '\0' .. slot
    local kept = tonumber(redis.call('GET', skey)) or 0
    if kept < per_slot then
      redis.call('SET', skey, kept + 1, 'EX', bucket_ttl)
      reason = 2
    end
  end
  local ckey = prefix .. 'fc:' .. fp
  if reason == 0 then
    redis.call('INCR', ckey)
    redis.call('EXPIRE', ckey, ttl)
    return 0, 0
  end
  local carried = tonumber(redis.call('GET', ckey)) or 0
  if carried > 0 then redis.call('DEL', ckey) end
  return 1 + carried, reason
end
"""

# ARGV: prefix, ttl (carried), bucket_ttl, first_n, per_slot, then (fingerprint, minute, slot)...
# Reply: per admit, adjusted count (0: dropped) and reason (1 error, 2 flood, 0 dropped).
FLOOD = (
    _ADMIT
    + r"""
local prefix, ttl, bucket_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local first_n, per_slot = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
local i = 6
while i + 2 <= #ARGV do
  local adjusted, reason = admit(prefix, ttl, bucket_ttl, first_n, per_slot, ARGV[i], ARGV[i + 1], ARGV[i + 2])
  out[#out + 1] = adjusted
  out[#out + 1] = reason
  i = i + 3
end
return out
"""
)

# Trace decisions for late spans (``SampleProcessor._trace_decision``): a decision that the trace
# id alone does not reproduce (error, flood, latency, rule; kept or dropped) is stored under
# ``sd:<trace id>`` as "keep,adjusted,threshold" for ``ttl`` seconds; spans of a trace arriving
# after its decision (a batch that is not complete) follow it on any replica, except that an
# error arriving for a dropped trace is decided afresh. Error traces are admitted through the
# flood budgets here (``admit``), so the batch's flood and decisions are one call.
# ARGV: prefix, decision ttl, carried ttl, bucket_ttl, first_n, per_slot, complete (0/1), then per
#       trace 10 fields: trace id, error (0/1), fingerprint, minute, slot, factor (upstream
#       adjusted count), and this replica's own decision: keep (0/1), reason, adjusted, threshold.
# Reply: per trace "keep,reason,adjusted,threshold" (threshold "" when none).
DECISIONS = (
    _ADMIT
    + r"""
local prefix, dttl, ttl, bucket_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local first_n, per_slot, complete = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'
local reproducible = {probability = true, follow_trace = true}
local out = {}
local i = 8
while i + 9 <= #ARGV do
  local dkey = prefix .. 'sd:' .. ARGV[i]
  local err = ARGV[i + 1] == '1'
  local answer
  if not complete then
    local cached = redis.call('GET', dkey)
    if cached then
      local keep, adjusted, threshold = string.match(cached, '^(%d),([^,]*),(.*)$')
      if keep == '1' or not err then answer = keep .. ',follow_trace,' .. adjusted .. ',' .. threshold end
    end
  end
  if not answer then
    local keep, reason, adjusted, threshold
    if err then
      local n, why = admit(prefix, ttl, bucket_ttl, first_n, per_slot, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
      keep = n > 0 and '1' or '0'
      reason = why == 1 and 'error' or 'flood'
      adjusted = string.format('%.17g', n * tonumber(ARGV[i + 5]))
      threshold = ''
    else
      keep, reason, adjusted, threshold = ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], ARGV[i + 9]
    end
    if not reproducible[reason] then
      redis.call('SET', dkey, keep .. ',' .. adjusted .. ',' .. threshold, 'EX', dttl)
    end
    answer = keep .. ',' .. reason .. ',' .. adjusted .. ',' .. threshold
  end
  out[#out + 1] = answer
  i = i + 10
end
return out
"""
)

# Incident candidates (``IncidentTracker``): the window's counts per slot of telemetry time in
# hashes ``is:<slot>`` (fields as ``IncidentTracker.deltas``: f, x<service>, o<origin>\0<service>)
# and ``ic:<slot>`` (c<service>: read only when an origin qualifies), kept for the window and a
# slot (wall time); ``in`` the newest telemetry time (``state_ttl``); an origin qualifying for an incident is claimed once, ``ia:<origin>`` = the telemetry time of the
# claim (the incident's id and opening time on every replica), listed in the set ``io`` and
# dropped when the origin has no failing trace left in the window.
# ARGV: prefix, slot_ttl, state_ttl, slot_seconds, window, min_errors, min_services, batch's newest
#       time ("" for none), then (slot, field, n)...
# Reply: {now, {origin, service, n, ...}, failed, {service, cover, fail cover, ...},
#         {origin, claimed at, claimed by this call (0/1), ...}}; {} before any trace.
INCIDENTS = r"""
local prefix, slot_ttl, state_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local slot_seconds, window = tonumber(ARGV[4]), tonumber(ARGV[5])
local min_errors, min_services = tonumber(ARGV[6]), tonumber(ARGV[7])
local nkey = prefix .. 'in'
local now = tonumber(redis.call('GET', nkey))
local newest = tonumber(ARGV[8])
if newest and (not now or newest > now) then
  now = newest
  redis.call('SET', nkey, ARGV[8], 'EX', state_ttl)
end
if not now then return {} end
local oldest = math.floor((now - window) / slot_seconds)
local touched = {}
for i = 9, #ARGV - 2, 3 do
  local slot = tonumber(ARGV[i])
  if slot > oldest then
    -- Cover (every trace) apart from the failing counts: each batch reads only the latter.
    local key = prefix .. (string.sub(ARGV[i + 1], 1, 1) == 'c' and 'ic:' or 'is:') .. ARGV[i]
    redis.call('HINCRBY', key, ARGV[i + 1], ARGV[i + 2])
    if not touched[key] then
      redis.call('EXPIRE', key, slot_ttl)  -- once per slot and batch
      touched[key] = true
    end
  end
end
local by_origin, origins, sums = {}, {}, {}
local function add(kind)
  for slot = oldest + 1, math.floor(now / slot_seconds) do
    local h = redis.call('HGETALL', prefix .. kind .. slot)
    for j = 1, #h, 2 do sums[h[j]] = (sums[h[j]] or 0) + tonumber(h[j + 1]) end
  end
end
add('is:')
local flat = {}
for f, n in pairs(sums) do
  if string.sub(f, 1, 1) == 'o' then
    local origin, svc = string.match(f, '^o(.-)%z(.*)$')
    flat[#flat + 1] = origin; flat[#flat + 1] = svc; flat[#flat + 1] = n
    if not by_origin[origin] then by_origin[origin] = 0; origins[#origins + 1] = origin end
    if n >= min_errors then by_origin[origin] = by_origin[origin] + 1 end
  end
end
local claims, cover = {}, {}
for _, origin in ipairs(origins) do
  if by_origin[origin] >= min_services then
    local ckey = prefix .. 'ia:' .. origin
    local at, mine = redis.call('GET', ckey), 0
    if not at then
      at, mine = string.format('%.17g', now), 1
      redis.call('SET', ckey, at, 'EX', slot_ttl)
      redis.call('SADD', prefix .. 'io', origin)
      redis.call('EXPIRE', prefix .. 'io', slot_ttl)
    end
    claims[#claims + 1] = origin; claims[#claims + 1] = at; claims[#claims + 1] = mine
  end
end
for _, origin in ipairs(redis.call('SMEMBERS', prefix .. 'io')) do
  if by_origin[origin] then
    redis.call('EXPIRE', prefix .. 'ia:' .. origin, slot_ttl)
  else
    redis.call('DEL', prefix .. 'ia:' .. origin)
    redis.call('SREM', prefix .. 'io', origin)
  end
end
if #claims > 0 then
  add('ic:')
  for f, n in pairs(sums) do
    if string.sub(f, 1, 1) == 'c' then
      local svc = string.sub(f, 2)
      cover[#cover + 1] = svc; cover[#cover + 1] = n; cover[#cover + 1] = sums['x' .. svc] or 0
    end
  end
end
return {string.format('%.17g', now), flat, sums['f'] or 0, cover, claims}
"""
