"""The server-side Lua scripts of the Redis backend, one per operation.

Each script runs atomically in one EVALSHA: it reads the budget's state,
evicts what has aged out of every window, decides, commits and writes the
state back. All of a budget lives in one Redis hash (so it expires, is
evicted and is deleted as a whole):

- field ``s``: the state, packed little-endian doubles: the latest time seen,
  the next sequence number, the running prefix sums of tokens and
  nano-dollars over every record ever committed (as first committed), the
  sums of every correction made since (see below) and the count of released
  records; then per window its head (the sequence number of its oldest
  record), the prefix sums just before that head, the corrections and
  releases of the records it has evicted, and how many of the records it
  holds carry a correction;
- field ``c``: the window durations in nanoseconds the state was made for;
- field ``<seq>``: one record per admitted call, packed: its time and the
  prefix sums including it, followed by the call's id;
- field ``i<call id>``: the sequence number of that call, so that a call
  sent twice (a client retrying after a timeout) is committed once, and so
  that a reservation finds its record again;
- field ``d<seq>``: only for a settled or released record, its correction:
  the actual amounts minus the committed ones, and whether it was released.

A window's sums are the prefix sums minus its base, plus the corrections
not yet evicted from it, so eviction costs one read per evicted record and
``retry_after`` a binary search over the window's records: nothing is ever
proportional to the records held. Settling or releasing a record never
rewrites a prefix sum: it adds its correction to the global sums, and to the
evicted corrections of every window that no longer holds the record, whose
sums therefore do not move. That is O(windows).

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
    "RELEASE",
    "RETRY_AFTER",
    "SETTLE",
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
local MAX_H, MAX_L = 9223372036, 854775807
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

local function positive(h, l)
  return h > 0 or (h == 0 and l > 0)
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

local function corrupt(seq)
  error('LBWCORRUPT budget ' .. key .. ' has lost record ' .. seq)
end

local function read(seq)
  local v = redis.call('HGET', key, seq)
  if not v then corrupt(seq) end
  return v
end

-- A record and its correction (false if it has none).
local function read_both(seq)
  local v = redis.call('HMGET', key, seq, 'd' .. seq)
  if not v[1] then corrupt(seq) end
  return v[1], v[2]
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

-- Load the state. The prefix sums (tt, tn) and every correction sum (ct, cn
-- globally, gt, gn per window) are pairs modulo 10**19.
local G, W = 12, 11
local fmt = '<' .. string.rep('d', G + W * nw)
local stored = redis.call('HMGET', key, 's', 'c')
local fresh = not stored[1]
local latest_h, latest_l
local nxt, tt_h, tt_l, tn_h, tn_l = 0, 0, 0, 0, 0
local ct_h, ct_l, cn_h, cn_l, released = 0, 0, 0, 0, 0
local head, bt_h, bt_l, bn_h, bn_l = {}, {}, {}, {}, {}
local gt_h, gt_l, gn_h, gn_l, gone_released, marked = {}, {}, {}, {}, {}, {}
if fresh then
  for w = 1, nw do
    head[w], bt_h[w], bt_l[w], bn_h[w], bn_l[w] = 0, 0, 0, 0, 0
    gt_h[w], gt_l[w], gn_h[w], gn_l[w], gone_released[w], marked[w] =
      0, 0, 0, 0, 0, 0
  end
else
  if stored[2] ~= config then
    return redis.error_reply('LBWCONFIG ' .. tostring(stored[2]))
  end
  local s = {struct.unpack(fmt, stored[1])}
  latest_h, latest_l, nxt = s[1], s[2], s[3]
  tt_h, tt_l, tn_h, tn_l = s[4], s[5], s[6], s[7]
  ct_h, ct_l, cn_h, cn_l, released = s[8], s[9], s[10], s[11], s[12]
  for w = 1, nw do
    local o = G + (w - 1) * W
    head[w], bt_h[w], bt_l[w], bn_h[w], bn_l[w] =
      s[o + 1], s[o + 2], s[o + 3], s[o + 4], s[o + 5]
    gt_h[w], gt_l[w], gn_h[w], gn_l[w], gone_released[w], marked[w] =
      s[o + 6], s[o + 7], s[o + 8], s[o + 9], s[o + 10], s[o + 11]
  end
end
local now_h, now_l

-- A window's sums per axis (tokens, nano-dollars, requests), as pairs.
local function sums(w)
  local th, tl = sub_mod(tt_h, tt_l, bt_h[w], bt_l[w])
  local xh, xl = sub_mod(ct_h, ct_l, gt_h[w], gt_l[w])
  th, tl = add_mod(th, tl, xh, xl)
  local nh, nl = sub_mod(tn_h, tn_l, bn_h[w], bn_l[w])
  xh, xl = sub_mod(cn_h, cn_l, gn_h[w], gn_l[w])
  nh, nl = add_mod(nh, nl, xh, xl)
  local rh, rl = split(nxt - head[w] - (released - gone_released[w]))
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
-- Exact only while window w holds no corrected record.
local function covers(w, seq, eh, el)
  local _, _, pt_h, pt_l, pn_h, pn_l = struct.unpack('<dddddd', read(seq))
  local ph, pl = sub_mod(pt_h, pt_l, bt_h[w], bt_l[w])
  if less(ph, pl, eh[1], el[1]) then return false end
  ph, pl = sub_mod(pn_h, pn_l, bn_h[w], bn_l[w])
  if less(ph, pl, eh[2], el[2]) then return false end
  ph, pl = split(seq - head[w] + 1)
  return not less(ph, pl, eh[3], el[3])
end

-- The sequence number of the first record of window w after whose
-- departure the excess eh/el is gone, walking the records one by one.
-- LIMITATION: a settled or released record changes the amounts between
-- the stored prefix sums, so the bisection would be wrong for a window
-- holding one. This walk costs one read per record up to the one that
-- makes room (as the in-process engines always do) instead of a logarithm
-- of the records held; a window falls back to it only while it holds a
-- corrected record. A tree of corrections would avoid it, at the price of
-- many more writes per settle.
local function walk(w, eh, el)
  local pt_h, pt_l, pn_h, pn_l = bt_h[w], bt_l[w], bn_h[w], bn_l[w]
  for seq = head[w], nxt - 1 do
    local rec, delta = read_both(seq)
    local _, _, qt_h, qt_l, qn_h, qn_l = struct.unpack('<dddddd', rec)
    local th, tl = sub_mod(qt_h, qt_l, pt_h, pt_l)
    local nh, nl = sub_mod(qn_h, qn_l, pn_h, pn_l)
    pt_h, pt_l, pn_h, pn_l = qt_h, qt_l, qn_h, qn_l
    local gone = 0
    if delta then
      local dth, dtl, dnh, dnl, r = struct.unpack('<ddddd', delta)
      th, tl = add_mod(th, tl, dth, dtl)
      nh, nl = add_mod(nh, nl, dnh, dnl)
      gone = r
    end
    if gone == 0 then
      eh[1], el[1] = sub(eh[1], el[1], th, tl)
      eh[2], el[2] = sub(eh[2], el[2], nh, nl)
      eh[3], el[3] = sub(eh[3], el[3], 0, 1)
      if not (positive(eh[1], el[1]) or positive(eh[2], el[2])
              or positive(eh[3], el[3])) then
        return seq
      end
    end
  end
  return nxt - 1
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
      if positive(eh[a], el[a]) then over = true end
    end
    if over then
      local lo
      if marked[w] > 0 then
        lo = walk(w, eh, el)
      else
        -- Prefix sums only grow, so the first record whose departure makes
        -- room is found by bisection.
        local hi
        lo, hi = head[w], nxt - 1
        while lo < hi do
          local mid = math.floor((lo + hi) / 2)
          if covers(w, mid, eh, el) then hi = mid else lo = mid + 1 end
        end
      end
      local t_h, t_l = struct.unpack('<dd', read(lo))
      t_h, t_l = add(t_h, t_l, dur_h[w], dur_l[w])
      if less(uh, ul, t_h, t_l) then uh, ul = t_h, t_l end
    end
  end
  local wh, wl = sub(uh, ul, now_h, now_l)
  return 0, wh, wl
end

-- Write the state back (with any extra fields); push the expiry out if told.
local function save(extra, expire)
  local v = {now_h, now_l, nxt, tt_h, tt_l, tn_h, tn_l,
             ct_h, ct_l, cn_h, cn_l, released}
  for w = 1, nw do
    local o = G + (w - 1) * W
    v[o + 1], v[o + 2], v[o + 3], v[o + 4], v[o + 5] =
      head[w], bt_h[w], bt_l[w], bn_h[w], bn_l[w]
    v[o + 6], v[o + 7], v[o + 8], v[o + 9], v[o + 10], v[o + 11] =
      gt_h[w], gt_l[w], gn_h[w], gn_l[w], gone_released[w], marked[w]
  end
  local args = {'s', struct.pack(fmt, unpack(v))}
  if fresh then
    args[#args + 1] = 'c'
    args[#args + 1] = config
  end
  for i = 1, #extra do args[#args + 1] = extra[i] end
  redis.call('HSET', key, unpack(args))
  if expire then redis.call('PEXPIRE', key, ARGV[3]) end
end
"""

_ADVANCE = r"""
-- The time of this call: never before the latest time seen.
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
    local rec, delta
    if marked[w] > 0 then
      rec, delta = read_both(seq)
    else
      rec = read(seq)
    end
    local t_h, t_l, pt_h, pt_l, pn_h, pn_l = struct.unpack('<dddddd', rec)
    if less(cut_h, cut_l, t_h, t_l) then break end
    bt_h[w], bt_l[w], bn_h[w], bn_l[w] = pt_h, pt_l, pn_h, pn_l
    if delta then
      local dth, dtl, dnh, dnl, r = struct.unpack('<ddddd', delta)
      gt_h[w], gt_l[w] = add_mod(gt_h[w], gt_l[w], dth, dtl)
      gn_h[w], gn_l[w] = add_mod(gn_h[w], gn_l[w], dnh, dnl)
      gone_released[w] = gone_released[w] + r
      marked[w] = marked[w] - 1
      if w == longest then dead[#dead + 1] = 'd' .. seq end
    end
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
  save({}, true)
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
save({seq, rec, 'i' .. call_id, seq}, true)
return {0}
"""

# The reservation's record, found by the call id it was committed under; a
# call id that is gone (the record left the longest window, or the budget
# was reset or expired) makes the correction a no-op.
_FIND_RESERVED = r"""
local found = redis.call('HGET', KEYS[1], 'i' .. ARGV[1])
if not found then return {0} end
"""

_CORRECT = r"""
local seq = tonumber(found)
if fresh or seq < head[longest] or seq >= nxt then return {0} end
now_h, now_l = latest_h, latest_l

-- The committed amounts: this record's prefix sums minus the previous one's.
local rec, delta = read_both(seq)
local _, _, pt_h, pt_l, pn_h, pn_l = struct.unpack('<dddddd', rec)
local qt_h, qt_l, qn_h, qn_l
if seq == head[longest] then
  qt_h, qt_l, qn_h, qn_l = bt_h[longest], bt_l[longest], bn_h[longest], bn_l[longest]
else
  local _, _, a1, a2, a3, a4 = struct.unpack('<dddddd', read(seq - 1))
  qt_h, qt_l, qn_h, qn_l = a1, a2, a3, a4
end
local ot_h, ot_l = sub_mod(pt_h, pt_l, qt_h, qt_l)
local on_h, on_l = sub_mod(pn_h, pn_l, qn_h, qn_l)

-- Its correction so far, and the amounts it counts now.
local dt_h, dt_l, dn_h, dn_l, was_released = 0, 0, 0, 0, 0
if delta then
  dt_h, dt_l, dn_h, dn_l, was_released = struct.unpack('<ddddd', delta)
end
-- A released record stays released: a late or repeated correction of it
-- changes nothing.
if was_released == 1 then return {0} end
local old_th, old_tl = add_mod(ot_h, ot_l, dt_h, dt_l)
local old_nh, old_nl = add_mod(on_h, on_l, dn_h, dn_l)

local new_th, new_tl, new_nh, new_nl, now_released = 0, 0, 0, 0, 1
if not releasing then
  new_th, new_tl, new_nh, new_nl, now_released =
    amt_h[1], amt_l[1], amt_h[2], amt_l[2], 0
  -- No window that holds the record may pass 2**63 - 1.
  local old_h, old_l = {old_th, old_nh}, {old_tl, old_nl}
  local new_h, new_l = {new_th, new_nh}, {new_tl, new_nl}
  for w = 1, nw do
    if head[w] <= seq then
      local sh, sl = sums(w)
      for a = 1, 2 do
        local limit_h, limit_l = add(MAX_H, MAX_L, old_h[a], old_l[a])
        local total_h, total_l = add(sh[a], sl[a], new_h[a], new_l[a])
        if less(limit_h, limit_l, total_h, total_l) then
          return {1, w - 1, a - 1}
        end
      end
    end
  end
end

-- The new correction, and the change from the old one.
local et_h, et_l = sub_mod(new_th, new_tl, ot_h, ot_l)
local en_h, en_l = sub_mod(new_nh, new_nl, on_h, on_l)
local xt_h, xt_l = sub_mod(et_h, et_l, dt_h, dt_l)
local xn_h, xn_l = sub_mod(en_h, en_l, dn_h, dn_l)
local xr = now_released - was_released
ct_h, ct_l = add_mod(ct_h, ct_l, xt_h, xt_l)
cn_h, cn_l = add_mod(cn_h, cn_l, xn_h, xn_l)
released = released + xr

local had = delta and true or false
local has = now_released == 1 or positive(et_h, et_l) or positive(en_h, en_l)
for w = 1, nw do
  if head[w] > seq then
    -- Evicted already: its sums must not move.
    gt_h[w], gt_l[w] = add_mod(gt_h[w], gt_l[w], xt_h, xt_l)
    gn_h[w], gn_l[w] = add_mod(gn_h[w], gn_l[w], xn_h, xn_l)
    gone_released[w] = gone_released[w] + xr
  elseif has and not had then
    marked[w] = marked[w] + 1
  elseif had and not has then
    marked[w] = marked[w] - 1
  end
end

if has then
  save({'d' .. seq, struct.pack('<ddddd', et_h, et_l, en_h, en_l, now_released)}, false)
else
  if had then redis.call('HDEL', key, 'd' .. seq) end
  save({}, false)
end
return {0}
"""

#: Record the call if it fits: ``{0}``, else commit nothing and answer
#: ``{1, window, axis, used_high, used_low, never, wait_high, wait_low}``.
#: A reservation is such a record; its call id finds it again.
TRY_RECORD = _DEDUPE + _PRELUDE + _ADVANCE + _DECIDE + _COMMIT

#: Answer like TRY_RECORD, committing nothing.
CHECK = _PRELUDE + _ADVANCE + _DECIDE + "save({}, true)\nreturn {0}\n"

#: ``{never, wait_high, wait_low}``: nanoseconds until the request fits.
RETRY_AFTER = (
    _PRELUDE
    + _ADVANCE
    + "local n, h, l = wait_ns()\nsave({}, true)\nreturn {n, h, l}\n"
)

#: Per window: ``tokens_high, tokens_low, nanos_high, nanos_low, requests``.
SNAPSHOT = (
    _PRELUDE
    + _ADVANCE
    + r"""
local out = {}
for w = 1, nw do
  local sh, sl = sums(w)
  out[#out + 1] = sh[1]
  out[#out + 1] = sl[1]
  out[#out + 1] = sh[2]
  out[#out + 1] = sl[2]
  out[#out + 1] = sh[3] * B + sl[3]
end
save({}, true)
return out
"""
)

#: Set the amounts of the call committed under this call id, in every window
#: that still holds it, at its original time; no time passes and nothing is
#: evicted. ``{0}``, or ``{1, window, axis}`` (nothing changed) when a sum
#: would pass 2**63 - 1. Setting absolute amounts makes a repeat harmless.
SETTLE = _FIND_RESERVED + _PRELUDE + "local releasing = false\n" + _CORRECT

#: Remove the call committed under this call id from every window that
#: still holds it, the requests axis included: ``{0}``. Idempotent.
RELEASE = _FIND_RESERVED + _PRELUDE + "local releasing = true\n" + _CORRECT
