"""The server-side Lua scripts of the Redis backend, one per operation.

Each script runs atomically in one EVALSHA: it reads the budget's state,
evicts what has aged out of every window, decides, commits and writes the
state back. All of a budget lives in one Redis hash (so it expires, is
evicted and is deleted as a whole):

- field ``s``: the state, packed little-endian doubles: the latest time seen,
  the next sequence number, the running prefix sums of tokens and
  nano-dollars over every record ever committed, and per window its head
  (the sequence number of its oldest record) and the prefix sums just before
  that head;
- field ``c``: the window durations in nanoseconds the state was made for;
- field ``<seq>``: one record per admitted call, packed: its time and the
  prefix sums including it, followed by the call's id;
- field ``i<call id>``: the sequence number of that call, so that a call
  sent twice (a client retrying after a timeout) is committed once.

A window's sums are the prefix sums minus its base, so eviction costs one
read per evicted record and ``retry_after`` a binary search over the
window's records: nothing is ever proportional to the records held.

Lua numbers are doubles, exact only below 2**53. Every integer that can be
larger (times and durations in nanoseconds, token and nano-dollar sums, caps)
travels and is stored as a pair ``(high, low)`` meaning ``high * 10**9 +
low`` with ``0 <= low < 10**9``, and all arithmetic is done on pairs, which
keeps every result exact. Prefix sums grow without bound, so they are kept
modulo ``10**19`` (above 2**63): the difference of two of them is a window
sum or a part of one, which never exceeds 2**63 - 1, so it is exact.
"""

from __future__ import annotations

__all__ = [
    "CHECK",
    "RETRY_AFTER",
    "SNAPSHOT",
    "TRY_RECORD",
    "encode_pair",
    "FIXED_ARGS",
    "WINDOW_ARGS",
]

#: Arguments before the per-window ones: call id, config, ttl (ms), now
#: (high, low, or two empty strings for the server's clock), tokens (high,
#: low), nano-dollars (high, low), index of the longest window (1-based).
FIXED_ARGS = 10

#: Arguments per window: duration, token cap, nano-dollar cap, request cap,
#: each as a pair (an uncapped axis is capped at 2**63 - 1).
WINDOW_ARGS = 8

PAIR_BASE = 10**9


def encode_pair(value: int) -> tuple[int, int]:
    """Split an integer into ``(high, low)`` with ``value == high * 10**9 + low``."""
    return divmod(value, PAIR_BASE)


_PRELUDE = r"""
local key = KEYS[1]
local call_id = ARGV[1]
local config = ARGV[2]
local B = 1000000000
local MOD_HI = 10000000000
local nw = (#ARGV - 10) / 8
local longest = tonumber(ARGV[10])

local function add(ah, al, bh, bl)
  local l = al + bl
  if l >= B then return ah + bh + 1, l - B end
  return ah + bh, l
end

local function sub(ah, al, bh, bl)
  local l = al - bl
  if l < 0 then return ah - bh - 1, l + B end
  return ah - bh, l
end

local function less(ah, al, bh, bl)
  return ah < bh or (ah == bh and al < bl)
end

local function add_mod(ah, al, bh, bl)
  local h, l = add(ah, al, bh, bl)
  if h >= MOD_HI then h = h - MOD_HI end
  return h, l
end

local function sub_mod(ah, al, bh, bl)
  local h, l = sub(ah, al, bh, bl)
  if h < 0 then h = h + MOD_HI end
  return h, l
end

local function split(x)
  local h = math.floor(x / B)
  return h, x - h * B
end

local function read(seq)
  local v = redis.call('HGET', key, seq)
  if not v then
    error('LBWCORRUPT budget ' .. key .. ' has lost record ' .. seq)
  end
  return v
end

local amt_h = {tonumber(ARGV[6]), tonumber(ARGV[8]), 0}
local amt_l = {tonumber(ARGV[7]), tonumber(ARGV[9]), 1}
local dur_h, dur_l, cap_h, cap_l = {}, {}, {}, {}
for w = 1, nw do
  local o = 10 + (w - 1) * 8
  dur_h[w], dur_l[w] = tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2])
  cap_h[w] = {tonumber(ARGV[o + 3]), tonumber(ARGV[o + 5]), tonumber(ARGV[o + 7])}
  cap_l[w] = {tonumber(ARGV[o + 4]), tonumber(ARGV[o + 6]), tonumber(ARGV[o + 8])}
end

-- Load the state.
local fmt = '<' .. string.rep('d', 7 + 5 * nw)
local stored = redis.call('HMGET', key, 's', 'c')
local fresh = not stored[1]
local latest_h, latest_l
local nxt, tt_h, tt_l, tn_h, tn_l = 0, 0, 0, 0, 0
local head, bt_h, bt_l, bn_h, bn_l = {}, {}, {}, {}, {}
if fresh then
  for w = 1, nw do
    head[w], bt_h[w], bt_l[w], bn_h[w], bn_l[w] = 0, 0, 0, 0, 0
  end
else
  if stored[2] ~= config then
    return redis.error_reply('LBWCONFIG ' .. tostring(stored[2]))
  end
  local s = {struct.unpack(fmt, stored[1])}
  latest_h, latest_l, nxt = s[1], s[2], s[3]
  tt_h, tt_l, tn_h, tn_l = s[4], s[5], s[6], s[7]
  for w = 1, nw do
    local o = 7 + (w - 1) * 5
    head[w], bt_h[w], bt_l[w], bn_h[w], bn_l[w] =
      s[o + 1], s[o + 2], s[o + 3], s[o + 4], s[o + 5]
  end
end

-- The time of this call: never before the latest time seen.
local now_h, now_l
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now_h, now_l = tonumber(t[1]), tonumber(t[2]) * 1000
else
  now_h, now_l = tonumber(ARGV[4]), tonumber(ARGV[5])
end
if latest_h and less(now_h, now_l, latest_h, latest_l) then
  now_h, now_l = latest_h, latest_l
end

-- Evict: a record at t leaves a window of length d once t + d <= now.
-- Records that leave the longest window have left every window; they are
-- deleted after the loop, because a shorter window may still walk past them.
local dead = {}
for w = 1, nw do
  local cut_h, cut_l = sub(now_h, now_l, dur_h[w], dur_l[w])
  local seq = head[w]
  while seq < nxt do
    local rec = read(seq)
    local t_h, t_l, ct_h, ct_l, cn_h, cn_l = struct.unpack('<dddddd', rec)
    if less(cut_h, cut_l, t_h, t_l) then break end
    bt_h[w], bt_l[w], bn_h[w], bn_l[w] = ct_h, ct_l, cn_h, cn_l
    if w == longest then
      dead[#dead + 1] = seq
      if #rec > 48 then dead[#dead + 1] = 'i' .. string.sub(rec, 49) end
    end
    seq = seq + 1
  end
  head[w] = seq
end
for i = 1, #dead, 4000 do
  redis.call('HDEL', key, unpack(dead, i, math.min(i + 3999, #dead)))
end

-- A window's sums per axis (tokens, nano-dollars, requests), as pairs.
local function sums(w)
  local th, tl = sub_mod(tt_h, tt_l, bt_h[w], bt_l[w])
  local nh, nl = sub_mod(tn_h, tn_l, bn_h[w], bn_l[w])
  local rh, rl = split(nxt - head[w])
  return {th, nh, rh}, {tl, nl, rl}
end

-- The first window and axis where used + requested > cap, in order.
local function find_problem()
  for w = 1, nw do
    local sh, sl = sums(w)
    for a = 1, 3 do
      local th, tl = add(sh[a], sl[a], amt_h[a], amt_l[a])
      if less(cap_h[w][a], cap_l[w][a], th, tl) then
        return w, a, sh[a], sl[a]
      end
    end
  end
  return nil
end

-- Whether records head..seq of window w hold at least the excess eh/el.
local function covers(w, seq, eh, el)
  local _, _, ct_h, ct_l, cn_h, cn_l = struct.unpack('<dddddd', read(seq))
  local ph, pl = sub_mod(ct_h, ct_l, bt_h[w], bt_l[w])
  if less(ph, pl, eh[1], el[1]) then return false end
  ph, pl = sub_mod(cn_h, cn_l, bn_h[w], bn_l[w])
  if less(ph, pl, eh[2], el[2]) then return false end
  ph, pl = split(seq - head[w] + 1)
  return not less(ph, pl, eh[3], el[3])
end

-- Nanoseconds until the request fits every window: never, high, low.
local function wait_ns()
  for w = 1, nw do
    for a = 1, 3 do
      if less(cap_h[w][a], cap_l[w][a], amt_h[a], amt_l[a]) then
        return 1, 0, 0
      end
    end
  end
  local uh, ul = now_h, now_l
  for w = 1, nw do
    local sh, sl = sums(w)
    local eh, el, over = {}, {}, false
    for a = 1, 3 do
      local th, tl = add(sh[a], sl[a], amt_h[a], amt_l[a])
      eh[a], el[a] = sub(th, tl, cap_h[w][a], cap_l[w][a])
      if eh[a] > 0 or (eh[a] == 0 and el[a] > 0) then over = true end
    end
    if over then
      -- Prefix sums only grow, so the first record whose departure makes
      -- room is found by bisection.
      local lo, hi = head[w], nxt - 1
      while lo < hi do
        local mid = math.floor((lo + hi) / 2)
        if covers(w, mid, eh, el) then hi = mid else lo = mid + 1 end
      end
      local t_h, t_l = struct.unpack('<dd', read(lo))
      t_h, t_l = add(t_h, t_l, dur_h[w], dur_l[w])
      if less(uh, ul, t_h, t_l) then uh, ul = t_h, t_l end
    end
  end
  local wh, wl = sub(uh, ul, now_h, now_l)
  return 0, wh, wl
end

-- Write the state back (with any extra fields) and push the expiry out.
local function save(extra)
  local v = {now_h, now_l, nxt, tt_h, tt_l, tn_h, tn_l}
  for w = 1, nw do
    local o = 7 + (w - 1) * 5
    v[o + 1], v[o + 2], v[o + 3], v[o + 4], v[o + 5] =
      head[w], bt_h[w], bt_l[w], bn_h[w], bn_l[w]
  end
  local args = {'s', struct.pack(fmt, unpack(v))}
  if fresh then
    args[#args + 1] = 'c'
    args[#args + 1] = config
  end
  for i = 1, #extra do args[#args + 1] = extra[i] end
  redis.call('HSET', key, unpack(args))
  redis.call('PEXPIRE', key, ARGV[3])
end
"""

_DEDUPE = r"""
if redis.call('HEXISTS', KEYS[1], 'i' .. ARGV[1]) == 1 then
  return {0}
end
"""

_DECIDE = r"""
local w, a, uh, ul = find_problem()
if w then
  local never, wh, wl = wait_ns()
  save({})
  return {1, w - 1, a - 1, uh, ul, never, wh, wl}
end
"""

_COMMIT = r"""
local ch, cl = add_mod(tt_h, tt_l, amt_h[1], amt_l[1])
local nh, nl = add_mod(tn_h, tn_l, amt_h[2], amt_l[2])
local rec = struct.pack('<dddddd', now_h, now_l, ch, cl, nh, nl) .. call_id
tt_h, tt_l, tn_h, tn_l = ch, cl, nh, nl
local seq = nxt
nxt = nxt + 1
save({seq, rec, 'i' .. call_id, seq})
return {0}
"""

#: Record the call if it fits: ``{0}``, else commit nothing and answer
#: ``{1, window, axis, used_high, used_low, never, wait_high, wait_low}``.
TRY_RECORD = _DEDUPE + _PRELUDE + _DECIDE + _COMMIT

#: Answer like TRY_RECORD, committing nothing.
CHECK = _PRELUDE + _DECIDE + "save({})\nreturn {0}\n"

#: ``{never, wait_high, wait_low}``: nanoseconds until the request fits.
RETRY_AFTER = _PRELUDE + "local n, h, l = wait_ns()\nsave({})\nreturn {n, h, l}\n"

#: Per window: ``tokens_high, tokens_low, nanos_high, nanos_low, requests``.
SNAPSHOT = (
    _PRELUDE
    + r"""
local out = {}
for w = 1, nw do
  local sh, sl = sums(w)
  out[#out + 1] = sh[1]
  out[#out + 1] = sl[1]
  out[#out + 1] = sh[2]
  out[#out + 1] = sl[2]
  out[#out + 1] = nxt - head[w]
end
save({})
return out
"""
)
