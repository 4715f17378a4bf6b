"""The Redis state store: customer states and source offsets in Redis, one round trip each way.

Keys (the layout other tools and operators rely on):
- state of a customer: ``{prefix}:s:{{{customer_id}}}`` (e.g. ``te:s:{c17850}``), a
  msgpack-encoded `CustomerState` (`engine.state.customer.encode_state`). The customer id
  is a hash tag, so in Redis Cluster everything of one customer lives in one slot.
- the keys of a source partition, all with the partition's name as their hash tag, so that in
  Redis Cluster they share one slot (a script can write them together):
  - source offset: ``{prefix}:o:{{{partition}}}`` (e.g. ``te:o:{orders-3}``), the next offset to
    read, as a decimal string;
  - deadline index: ``{prefix}:t:{{{partition}}}``, a sorted set of the customers with a pending
    deadline, scored by their earliest one (epoch ms): how a restarted worker finds due
    deadlines without loading every state;
  - outbox: ``{prefix}:x:{{{partition}}}``, a stream whose entry ids are ``<seq>-0``
    (`engine.state.outbox`), fields ``kind``, ``status`` and ``data`` (the item as JSON);
  - relay cursors: ``{prefix}:r:{{{partition}}}``, a hash: sink name -> the seq it passed;
  - event-time clock: ``{prefix}:c:{{{partition}}}``, JSON ``[frontier, newest, replay_from]``
    (`engine.state.store.PartitionClock`), written with the offset;
  - the last commit: ``{prefix}:k:{{{partition}}}``, ``<commit id> <step> <seq> <length> <offset>``, so that
    a commit retried after its reply was lost (the connection dropped after Redis ran it) is
    found applied, instead of refused as state loss (the stored offset is then its new one) or
    writing its outbox entries twice;
  - the population's responses (SPEC §3b) the partition's customers gave on a UTC day:
    ``{prefix}:p:{{{partition}}}:{day}``, a hash ``<channel>:<local hour>`` -> count, written with
    the offset (so counted exactly once), expiring `POPULATION_TTL_S` after its last write.
  Engines before the outbox kept the offset and the index under ``{prefix}:o:{partition}`` and
  ``{prefix}:t:{partition}``, ``{prefix}:c:{partition}`` (no braces); `load_offset` (`load_clock`
  for the clock) renames them the first time it finds them.

Single node: a batch is read with one MGET and written with one Lua script that first checks
the partition's stored offset is the one this engine committed last, then writes the encoded
states, the deadline index, the outbox entries and the new offset. A script runs atomically, so the offsets
commit together with the states they produced (after a crash the source resumes from offsets
that match the states exactly, SPEC §6), and a store that lost data (restarted without
persistence, flushed, failed over to a stale replica) is detected at the next commit instead
of being written over (`StateLost`). One round trip, like the MULTI/EXEC it replaces.

Retries and backoff when Redis is unavailable are the caller's job: every method makes its
round trip once and lets redis-py's exceptions through (`REDIS_ERRORS` are worth retrying,
`REDIS_FATAL` are not).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.cluster import RedisCluster

from engine.state.customer import CustomerState, decode_state, encode_state
from engine.state.outbox import ItemKind, OutboxEntry, OutboxTail
from engine.state.store import PartitionClock, PopulationCounts, StateLost, decode_clock, encode_clock

if TYPE_CHECKING:
    from engine.operators.settings import RedisSettings

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
"""What a caller retries: Redis is unreachable, timing out or loading its data."""
# Waiting cannot fix these: a wrong password or missing permission is a configuration error.
REDIS_FATAL = (redis.AuthenticationError, redis.exceptions.AuthorizationError)

_GLOB_SPECIALS = str.maketrans({c: "\\" + c for c in "*?[]\\"})

# The seq of an outbox's last entry ever written: its last-generated-id, which a stream keeps when
# it is trimmed empty (XINFO STREAM's reply is a flat list of names and values).
_LAST_SEQ_LUA = """
local function last_seq(key)
  if redis.call('EXISTS', key) == 0 then return 0 end
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then return tonumber(string.match(info[i + 1], '^(%d+)')) end
  end
  return 0
end
"""

# KEYS: offset key, deadline index key, outbox key, clock key, last commit key, then the
# population's day keys. ARGV: expected stored offset ("" = none), new offset ("" = leave it), clock
# ("" = leave it), commit id ("" = none), step, n, n state key/value pairs, m, m index score/member
# pairs, k, k outbox kind/status/data triples, q, q population key index/field/increment triples,
# members to unindex. Returns {1, "", last seq, outbox length} ({..., -1, -1} without entries), or
# {0, stored offset} when the offset is not the expected one. A commit id recorded with this step or
# a later one, and the offset as that step left it: applied already (a retry whose first reply was
# lost), its reply again, nothing written. The record: id, step, seq, length, offset after ("-": none).
# Arguments go to MSET/ZADD/ZREM in chunks: Lua's unpack() has a stack limit of a few thousand.
POPULATION_TTL_S = 90 * 86_400   # a day's population counts are read for 32 days after it (wall clock here)
_COMMIT_LUA = _LAST_SEQ_LUA + f"local POPULATION_TTL_S = {POPULATION_TTL_S}\n" + """
local stored = redis.call('GET', KEYS[1]) or ''
local stored_shown = stored == '' and '-' or stored   -- as the last commit's record writes it
local done = ARGV[4] ~= '' and redis.call('GET', KEYS[5])
local done_seq, done_length = nil, nil
if done then
  local id, step, seq, length, after = string.match(done, '^(%S+) (%d+) (%-?%d+) (%-?%d+) (%S+)$')
  -- this commit's, and nothing moved the offset since (else the offset's check below decides)
  if id == ARGV[4] and after == stored_shown then
    if tonumber(step) >= tonumber(ARGV[5]) then return {1, '', tonumber(seq), tonumber(length)} end
    done_seq, done_length = tonumber(seq), tonumber(length)   -- an earlier step of this commit
  end
end
if stored ~= ARGV[1] then return {0, stored} end
local function chunked(cmd, key, from, to, step)
  local i = from
  while i <= to do
    local j = math.min(i + step - 1, to)
    if key then redis.call(cmd, key, unpack(ARGV, i, j)) else redis.call(cmd, unpack(ARGV, i, j)) end
    i = j + 1
  end
end
local n = tonumber(ARGV[6])
local at = 7
chunked('MSET', nil, at, at + 2 * n - 1, 1000)
at = at + 2 * n
local m = tonumber(ARGV[at])
at = at + 1
chunked('ZADD', KEYS[2], at, at + 2 * m - 1, 1000)
at = at + 2 * m
local k = tonumber(ARGV[at])
at = at + 1
local seq, length = -1, -1
if k > 0 then
  seq = last_seq(KEYS[3])
  for _ = 1, k do
    seq = seq + 1
    redis.call('XADD', KEYS[3], seq .. '-0', 'kind', ARGV[at], 'status', ARGV[at + 1], 'data', ARGV[at + 2])
    at = at + 3
  end
  length = redis.call('XLEN', KEYS[3])
end
local q = tonumber(ARGV[at])
at = at + 1
local expiring = nil
for _ = 1, q do   -- a day key's triples come together: one EXPIRE each
  local key = KEYS[tonumber(ARGV[at])]
  redis.call('HINCRBY', key, ARGV[at + 1], ARGV[at + 2])
  if key ~= expiring then redis.call('EXPIRE', key, POPULATION_TTL_S); expiring = key end
  at = at + 3
end
chunked('ZREM', KEYS[2], at, #ARGV, 1000)
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2]) end
if ARGV[3] ~= '' then redis.call('SET', KEYS[4], ARGV[3]) end
if ARGV[4] ~= '' then
  if k == 0 and done_seq then seq, length = done_seq, done_length end   -- the first step's entries
  local after = ARGV[2] ~= '' and ARGV[2] or stored_shown
  redis.call('SET', KEYS[5], string.format('%s %s %d %d %s', ARGV[4], ARGV[5], seq, length, after))
else
  redis.call('DEL', KEYS[5])   -- a writer without ids (backfill): no retry may take its writes for its own
end
return {1, '', seq, length}
"""

# KEYS: outbox key. ARGV: first seq wanted, count. Returns {last seq, length, entries}.
_READ_LUA = """
local function read(key, first, count)
  local last = last_seq(key)
  if last == 0 or tonumber(first) > last then return {last, redis.call('XLEN', key), {}} end
  return {last, redis.call('XLEN', key), redis.call('XRANGE', key, first .. '-0', '+', 'COUNT', count)}
end
"""
_READ_OUTBOX_LUA = _LAST_SEQ_LUA + _READ_LUA + "return read(KEYS[1], ARGV[1], ARGV[2])"

# KEYS: cursors hash, outbox key. ARGV: sink, seq, the configured sinks. The entries every
# configured sink passed go (a sink without a cursor has passed none).
_SAVE_LUA = """
local function save(cursors, outbox, sink, seq, first_sink)
  redis.call('HSET', cursors, sink, seq)
  local low = nil
  for i = first_sink, #ARGV do
    local c = tonumber(redis.call('HGET', cursors, ARGV[i]) or '0')
    if low == nil or c < low then low = c end
  end
  if low and low > 0 then redis.call('XTRIM', outbox, 'MINID', (low + 1) .. '-0') end
  return low or 0
end
"""
_SAVE_CURSOR_LUA = _SAVE_LUA + "return save(KEYS[1], KEYS[2], ARGV[1], ARGV[2], 3)"

# KEYS: cursors hash, outbox key. ARGV: sink, seq, count, the configured sinks: save, then read.
_ADVANCE_LUA = _LAST_SEQ_LUA + _READ_LUA + _SAVE_LUA + """
save(KEYS[1], KEYS[2], ARGV[1], ARGV[2], 4)
return read(KEYS[2], tonumber(ARGV[2]) + 1, ARGV[3])
"""

# KEYS: offset, index (hash-tagged), legacy offset, legacy index. The offset, renaming the
# legacy keys of an engine before the outbox on the way (once: then the new key exists).
_LOAD_OFFSET_LUA = """
local v = redis.call('GET', KEYS[1])
if v then return v end
v = redis.call('GET', KEYS[3])
if not v then return false end
redis.call('RENAME', KEYS[3], KEYS[1])
if redis.call('EXISTS', KEYS[4]) == 1 and redis.call('EXISTS', KEYS[2]) == 0 then redis.call('RENAME', KEYS[4], KEYS[2]) end
return v
"""

_KINDS = {kind.value.encode(): kind for kind in ItemKind}


class RedisStore:
    """A `PartitionStore` and a `StateStore` in Redis (single node) or Redis Cluster.

    `url` is a redis-py URL (``redis://127.0.0.1:6379/0``; ``rediss://`` for TLS). With
    `cluster=True` it names any node of the cluster.

    Cluster mode: keys are grouped by hash slot and each slot gets its own MGET or MSET
    (redis-py's ``mget_nonatomic``/``mset_nonatomic``, pipelined per node). One customer's
    state is always written whole, but **a commit is not atomic** (`atomic` is False): it
    writes the outbox entries, then the states, then the index, clock and offset. A crash
    between two writes leaves states ahead of the offset, which the partition worker's fencing
    handles (each state carries the offset it holds every event before, `CustomerState.fence`,
    and a re-read event before it is skipped: state effects stay exactly-once), or outbox
    entries written twice (that commit's triggers re-sent, with their ids). Population counts
    (`population`) written before a crash are counted again. The partition's keys share one
    slot (their hash tag), so the first and the last write are the single node's commit script
    run on that slot: the offset's check with the outbox entries, and (checked again) the
    population, index, clock and offset. Each is atomic, and a commit is two script calls and
    one MSET per node whatever it holds.

    Not thread-safe in the sense of batching: use one store per worker (the redis-py client
    underneath has a connection pool and may be shared).
    """

    def __init__(self, url: str, prefix: str = "te", cluster: bool = False,
                 connection: dict[str, Any] | None = None) -> None:
        """`connection` holds redis-py connection options that override the URL's (username,
        password, TLS files), so credentials need not be written into the URL."""
        self.prefix = prefix
        self.cluster = cluster
        self.reads = (url, prefix, cluster)   # see `PartitionStore`
        self.atomic = not cluster   # a cluster commit writes slot after slot (see `commit`)
        # States are msgpack bytes: responses must stay bytes whatever the URL says.
        # hiredis parses the replies when it is installed (a project dependency).
        options = {**(connection or {}), "decode_responses": False}
        self.client: Any = (
            RedisCluster.from_url(url, **options) if cluster else redis.Redis.from_url(url, **options)
        )
        self._commit_script = self.client.register_script(_COMMIT_LUA)
        self._load_offset_script = None if cluster else self.client.register_script(_LOAD_OFFSET_LUA)
        self._read_outbox_script = self.client.register_script(_READ_OUTBOX_LUA)
        self._save_cursor_script = self.client.register_script(_SAVE_CURSOR_LUA)
        self._advance_script = self.client.register_script(_ADVANCE_LUA)
        self._state_key_head = f"{prefix}:s:{{"
        self._offset_key_head = f"{prefix}:o:"

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RedisStore:
        """The store the `redis` settings name, connected the one way every command connects:
        the URL (`rediss://` with `tls`), then username, password and TLS files over it."""
        return cls(settings.client_url(), settings.prefix, settings.cluster, settings.connection())

    def state_key(self, customer_id: str) -> str:
        """The key holding a customer's state."""
        return f"{self._state_key_head}{customer_id}}}"

    def offset_key(self, partition: str) -> str:
        """The key holding a source partition's next offset."""
        return f"{self._offset_key_head}{{{partition}}}"

    def outbox_key(self, partition: str) -> str:
        """The stream holding a partition's outbox."""
        return f"{self.prefix}:x:{{{partition}}}"

    def cursors_key(self, partition: str) -> str:
        """The hash of the relays' cursors in a partition's outbox (sink name -> seq)."""
        return f"{self.prefix}:r:{{{partition}}}"

    def load_many(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        """The stored states of these customers; customers without state are absent.

        One MGET on a single node. Pass distinct ids: a repeated id is fetched and decoded twice.
        """
        decode = decode_state
        return {cid: decode(value) for cid, value in self.load_many_encoded(customer_ids).items()}

    def load_many_encoded(self, customer_ids: Iterable[str]) -> dict[str, bytes]:
        """`load_many`, the states as the `encode_state` bytes they are stored as."""
        ids = customer_ids if isinstance(customer_ids, list) else list(customer_ids)
        if not ids:
            return {}
        head = self._state_key_head
        keys = [f"{head}{cid}}}" for cid in ids]
        values = self.client.mget_nonatomic(keys) if self.cluster else self.client.mget(keys)
        return {cid: value for cid, value in zip(ids, values) if value is not None}

    def deadline_key(self, partition: str) -> str:
        return f"{self.prefix}:t:{{{partition}}}"

    def commit_key(self, partition: str) -> str:
        """The key holding a partition's last commit id (see the module docstring)."""
        return f"{self.prefix}:k:{{{partition}}}"

    def clock_key(self, partition: str) -> str:
        return f"{self.prefix}:c:{{{partition}}}"

    def load_clock(self, partition: str) -> PartitionClock | None:
        """The partition's committed clock; an engine's older key (no hash tag) is moved first:
        without it a restart would not re-read the events held back for ordering."""
        key = self.clock_key(partition)
        value = self.client.get(key)
        if value is None:
            legacy = f"{self.prefix}:c:{partition}"
            value = self.client.get(legacy)
            if value is not None:   # copied, then deleted: the two keys may sit in different cluster slots
                self.client.set(key, value, nx=True)
                self.client.delete(legacy)
        return None if value is None else decode_clock(value)

    def load_clocks(self, partitions: Sequence[str]) -> dict[str, PartitionClock]:
        """The committed clocks of these partitions (those without one are absent); one pipeline."""
        pipe = self.client.pipeline(transaction=False)
        for partition in partitions:
            pipe.get(self.clock_key(partition))
        return {p: decode_clock(v) for p, v in zip(partitions, pipe.execute()) if v is not None}

    def population_key(self, partition: str, day: int) -> str:
        return f"{self.prefix}:p:{{{partition}}}:{day}"

    def load_population(self, partitions: Sequence[str], days: Sequence[int]) -> PopulationCounts:
        """The population's counts of these days, summed over these partitions; one pipeline."""
        pipe = self.client.pipeline(transaction=False)
        for day in days:
            for partition in partitions:
                pipe.hgetall(self.population_key(partition, day))
        counts: PopulationCounts = {}
        replies = iter(pipe.execute())
        for day in days:
            for _ in partitions:
                for field, n in next(replies).items():
                    channel, hour = field.decode().rsplit(":", 1)
                    hours = counts.get((channel, day))
                    if hours is None:
                        hours = counts[channel, day] = [0] * 24
                    hours[int(hour)] += int(n)
        return counts

    def load_offset(self, partition: str) -> int | None:
        """The partition's next offset; an engine's older keys (no hash tag) are renamed first."""
        keys = [self.offset_key(partition), self.deadline_key(partition),
                f"{self._offset_key_head}{partition}", f"{self.prefix}:t:{partition}"]
        value: Any
        if self._load_offset_script is not None:
            value = self._load_offset_script(keys=keys)
        else:   # cluster: the legacy keys sit in other slots; copied, then deleted
            value = self.client.get(keys[0])
            if value is None and (value := self.client.get(keys[2])) is not None:
                self.client.set(keys[0], value, nx=True)
                for cid, when in self.client.zrange(keys[3], 0, -1, withscores=True):
                    self.client.zadd(keys[1], {cid: when}, nx=True)
                self.client.delete(keys[2], keys[3])
        return None if value is None else int(value)

    def due_customers(self, partition: str, until_ms: int, limit: int = 1000) -> list[str]:
        """Customers of a partition whose earliest deadline is at or before `until_ms`."""
        members = self.client.zrangebyscore(self.deadline_key(partition), "-inf", until_ms, start=0, num=limit)
        return [m.decode() for m in members]

    def commit(self, partition: str, images: Mapping[str, bytes], offset: int | None,
               next_due: Mapping[str, int | None], unindex: list[str] | None = None,
               expected_offset: int | None = None, outbox: Sequence[OutboxEntry] = (),
               clock: PartitionClock | None = None, population: PopulationCounts | None = None,
               commit_id: str = "") -> OutboxTail | None:
        """A partition's batch: its encoded states, its next offset, its clock, its deadline index,
        its outbox entries and its population counts, at once; the outbox's tail after it when
        entries were written.

        `images` are the customers' states as `encode_state` bytes. `next_due` is each
        customer's earliest deadline (None: none pending), which decides its place in the
        index. `expected_offset` is the partition's offset as this engine last committed it
        (None: none yet); a store holding anything else raises `StateLost` and writes
        nothing. `commit_id` (unique to the commit, the same on its retries): a commit found
        applied already returns what it returned then, and writes nothing again. Single node: one
        Lua script, one round trip, atomic. Cluster: the check with the outbox, the states, the
        partition's other keys (see above).
        """
        due: dict[str, int] = {}
        # a customer to unindex (found without a state) that this commit writes keeps its new
        # deadline: the script removes after it adds, the in-memory store the other way round
        idle: list[str] = [cid for cid in unindex or () if cid not in images]
        for cid in images:
            when = next_due.get(cid)
            if when is None:
                idle.append(cid)
            else:
                due[cid] = when
        if self.cluster:
            # Slot by slot, in this order, so that a crash between two steps loses nothing: the
            # offset's check with the outbox (a crash after it re-sends this commit's triggers, with
            # their ids), the states (fenced by the worker: a re-read event they hold is skipped),
            # then the partition's other keys with the offset, checked again. The first and the last
            # step are each the commit script on the partition's slot (its keys share a hash tag):
            # atomic, so no step is ever half applied (a pipeline's commands could be, during a slot
            # migration, and a second engine that took the partition over in between is refused).
            # A retry with the commit's id skips the steps that ran (the states' MSET is idempotent).
            tail = self._run_commit(partition, expected_offset, None, None, {}, {}, outbox, None, [], commit_id, 1)
            self.save_many_encoded(images)
            self._run_commit(partition, expected_offset, offset, clock, {}, due, (), population, idle, commit_id, 2)
            return tail
        return self._run_commit(partition, expected_offset, offset, clock, images, due, outbox, population, idle,
                                commit_id, 2)

    def _run_commit(self, partition: str, expected_offset: int | None, offset: int | None,
                    clock: PartitionClock | None, images: Mapping[str, bytes], due: Mapping[str, int],
                    outbox: Sequence[OutboxEntry], population: PopulationCounts | None,
                    idle: list[str], commit_id: str = "", step: int = 2) -> OutboxTail | None:
        """The commit script: nothing unless the stored offset is `expected_offset`; then the
        states, the index, the outbox's entries, the population, and the offset and clock when
        given. Every key but the states' is the partition's (one slot in a cluster). `commit_id`
        recorded at `step` or later: applied already, nothing written."""
        head = self._state_key_head
        args: list[Any] = ["" if expected_offset is None else str(expected_offset),
                           "" if offset is None else str(offset),
                           b"" if clock is None else encode_clock(clock), commit_id, step, len(images)]
        for cid, image in images.items():
            args.append(f"{head}{cid}}}")
            args.append(image)
        args.append(len(due))
        for cid, when in due.items():
            args.append(when)
            args.append(cid)
        args.append(len(outbox))
        for entry in outbox:
            args += (entry.kind.value, entry.status, entry.data)
        keys = [self.offset_key(partition), self.deadline_key(partition), self.outbox_key(partition),
                self.clock_key(partition), self.commit_key(partition)]
        at = len(args)
        args.append(0)
        for (channel, day), hours in (population or {}).items():
            keys.append(self.population_key(partition, day))
            for hour, n in enumerate(hours):
                if n:
                    args += (len(keys), f"{channel}:{hour}", n)
                    args[at] += 1
        args.extend(idle)
        ok, stored, *tail = self._commit_script(keys=keys, args=args)
        if not ok:
            raise StateLost(partition, expected_offset, int(stored) if stored else None)
        return OutboxTail(tail[0], tail[1]) if outbox else None

    # -- the outbox ----------------------------------------------------------------------------

    def outbox_tail(self, partition: str) -> OutboxTail:
        _, tail = self.read_outbox(partition, 2**62, 0)
        return tail

    def read_outbox(self, partition: str, after: int, count: int) -> tuple[list[OutboxEntry], OutboxTail]:
        return self._entries(self._read_outbox_script(keys=[self.outbox_key(partition)], args=[after + 1, count]))

    def advance(self, partition: str, sink: str, seq: int, sinks: Sequence[str],
                count: int) -> tuple[list[OutboxEntry], OutboxTail]:
        return self._entries(self._advance_script(keys=[self.cursors_key(partition), self.outbox_key(partition)],
                                                  args=[sink, seq, count, *sinks]))

    @staticmethod
    def _entries(reply: list) -> tuple[list[OutboxEntry], OutboxTail]:
        last, length, raw = reply
        entries: list[OutboxEntry] = []
        kinds = _KINDS
        for entry_id, flat in raw:
            fields = dict(zip(flat[::2], flat[1::2]))
            entries.append(OutboxEntry(kinds[fields[b"kind"]], fields[b"status"].decode(), fields[b"data"],
                                       int(entry_id.split(b"-", 1)[0])))
        return entries, OutboxTail(int(last), int(length))

    def load_cursors(self, partition: str) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(self.cursors_key(partition)).items()}

    def save_cursor(self, partition: str, sink: str, seq: int, sinks: Sequence[str]) -> None:
        self._save_cursor_script(keys=[self.cursors_key(partition), self.outbox_key(partition)],
                                 args=[sink, seq, *sinks])

    def _mapping(self, images: Mapping[str, bytes], offsets: Mapping[str, int] | None) -> dict[str, bytes | int]:
        head = self._state_key_head
        mapping: dict[str, bytes | int] = {f"{head}{cid}}}": image for cid, image in images.items()}
        if offsets:
            offset_head = self._offset_key_head
            for partition, offset in offsets.items():
                mapping[f"{offset_head}{{{partition}}}"] = int(offset)
        return mapping

    def save_many(self, states: Mapping[str, CustomerState], offsets: Mapping[str, int] | None = None) -> None:
        """Write these states and source offsets (partition -> next offset).

        Single node: one MSET, atomic. Cluster: one MSET per hash slot, not atomic across
        slots (see the class docstring).
        """
        self.save_many_encoded({cid: encode_state(state) for cid, state in states.items()}, offsets)

    def save_many_encoded(self, images: Mapping[str, bytes], offsets: Mapping[str, int] | None = None) -> None:
        """`save_many` for states already encoded with `encode_state`."""
        mapping = self._mapping(images, offsets)
        if not mapping:
            return
        if self.cluster:
            self.client.mset_nonatomic(mapping)
        else:
            self.client.mset(mapping)

    def scan_states(self, batch: int = 500) -> Iterator[list[tuple[str, bytes]]]:
        """Every customer's stored state, as (customer id, `encode_state` bytes), `batch` at a time:
        SCAN over the prefix's state keys (every primary of a cluster) and one MGET per batch, so
        memory stays constant whatever the number of customers. A key written or deleted while
        it runs may or may not be seen (SCAN's guarantee); none is seen twice in one batch.
        Each batch is fetched by `load_many_encoded`, as every other read of states."""
        pattern = self._state_key_head.translate(_GLOB_SPECIALS) + "*"
        skip = len(self._state_key_head)
        ids: dict[str, None] = {}   # SCAN may return a key twice: distinct ids, in SCAN's order
        for key in self.client.scan_iter(match=pattern, count=max(batch, 100)):
            ids[key.decode()[skip:-1]] = None
            if len(ids) >= batch:
                yield list(self.load_many_encoded(list(ids)).items())
                ids = {}
        if ids:
            yield list(self.load_many_encoded(list(ids)).items())

    def load_offsets(self) -> dict[str, int]:
        """The saved source offsets (partition -> next offset), found by SCAN over the prefix.

        SCAN walks the whole keyspace (every primary in a cluster), so this is for start-up,
        not for the hot path.
        """
        pattern = self._offset_key_head.translate(_GLOB_SPECIALS) + "*"
        keys = list(self.client.scan_iter(match=pattern, count=1000))
        if not keys:
            return {}
        values = self.client.mget_nonatomic(keys) if self.cluster else self.client.mget(keys)
        skip = len(self._offset_key_head)
        offsets: dict[str, int] = {}
        legacy: dict[str, int] = {}
        for key, value in zip(keys, values):
            if value is not None:  # deleted between SCAN and MGET
                name = key.decode()[skip:]
                if name.startswith("{") and name.endswith("}"):
                    offsets[name[1:-1]] = int(value)
                else:   # an engine's before the outbox, not renamed yet (see `load_offset`)
                    legacy[name] = int(value)
        return {**legacy, **offsets}

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    def __repr__(self) -> str:
        mode = "cluster" if self.cluster else "single node"
        return f"RedisStore(prefix={self.prefix!r}, {mode})"
