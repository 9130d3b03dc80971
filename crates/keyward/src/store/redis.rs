//! The shared store: one Redis database that several nodes can use.
//!
//! Every record is a field of one hash per table, under the hash tag
//! `{keyward}` (so one batch's keys share a Redis Cluster slot), holding the
//! same bytes as the redb tables (`keyward_core::policy::encode_record`). A batch is
//! one Lua script: Redis runs it whole, with nothing of another client in
//! between, so a batch lands all of it or none of it. Audit events are a
//! list; an event's sequence number is its position in it, from 1.
//!
//! If Redis cannot be reached the commit fails, nothing changes in memory,
//! and the next commit connects again.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use keyward_core::policy::{decode_record, encode_record};
use keyward_core::{Code, KeyId, WorkspaceId};

use crate::history::{self, Granularity, HistoryBucket};

use super::{Batch, Change, Charged, Followed, Loaded, Store, Touched, UsageStats};
use crate::error::{Error, Result};
use crate::model::{AuditEvent, KeyRecord, Page, ToolRecord, UsageRecord, Workspace};

const META: &str = "{keyward}:meta";
const WORKSPACES: &str = "{keyward}:workspaces";
const TOOLS: &str = "{keyward}:tools";
const KEYS: &str = "{keyward}:keys";
const USAGE: &str = "{keyward}:usage";
const NONCES: &str = "{keyward}:nonces";
const SESSIONS: &str = "{keyward}:sessions";
const AUDIT: &str = "{keyward}:audit";
/// Version of each cell's counters in [`USAGE`], raised by every write of
/// them: what [`Store::charge`] compares.
const USAGE_VERSIONS: &str = "{keyward}:usage-versions";
/// Cells held for an admin change: expiry (Redis time, ms) by cell.
const USAGE_HOLDS: &str = "{keyward}:usage-holds";
/// Statistics the nodes add to the counters in [`USAGE`]: fields `<id>v`,
/// `<id>r` (valid and refused calls to add) and `<id>l` (last valid call).
const STATS: &str = "{keyward}:stats";
/// Key id → its own token's last valid call, Unix ms (the latest any node saw).
const LAST_USED: &str = "{keyward}:last-used";
/// Prefix of the usage history buckets: `{keyward}:h:<subject hex>:<granularity>:<start ms>`,
/// a hash of verdict code → calls that expires with its retention.
const HISTORY: &str = "{keyward}:h:";
/// Workspace id → the highest key serial handed out in it (`HINCRBY`).
const SERIALS: &str = "{keyward}:serials";
/// The change stream: one entry per batch that changed a followed table,
/// `node` then (table, field) pairs.
const CHANGES: &str = "{keyward}:changes";

/// Schema of the Redis layout this build writes.
const SCHEMA_VERSION: u32 = 1;
/// Value of `magic` in [`META`].
const MAGIC: &str = "keyward";
/// How long a connect, read or write may take before the call fails.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Applies a batch: ARGV[1] is the writing node, then (op, key, field,
/// value) quadruples:
/// - `hset`, `hdel`: of `key`; a write of the counters (`{keyward}:usage`)
///   also raises their version, a delete removes it;
/// - `usageat`: the counters `field` set to `value` only if their version
///   is `key` (checked for every such entry before anything is written:
///   one stale entry refuses the batch);
/// - `stats`: `value` is "valid refused last", added to the statistics of
///   the counters `field`;
/// - `audit`: RPUSH of `value` to the audit list (key and field unused);
///   the script returns the last event's place in it (its sequence
///   number), 0 without one;
/// - `hist`: `value` is "calls ttl-ms", added to `field` of the history
///   bucket `key`, which expires after the ttl;
/// - `atleast`: `field` of hash `key` set to the number `value` unless it
///   is larger already.
///
/// Every `hset`/`hdel` of a followed table is named in one change-stream
/// entry (several for a very large batch), in the same script, so a change
/// and its announcement land together.
const APPLY: &str = r"
local node = ARGV[1]
local i = 2
while i <= #ARGV do
  if ARGV[i] == 'usageat' then
    local now = redis.call('HGET', '{keyward}:usage-versions', ARGV[i + 2]) or '0'
    if now ~= ARGV[i + 1] then
      return redis.error_reply('KEYWARD_MOVED counters changed on another node')
    end
  end
  i = i + 4
end
local changed = {}
local audited = 0
i = 2
while i <= #ARGV do
  local op, key, field, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if op == 'usageat' then
    op, key = 'hset', '{keyward}:usage'
    redis.call('HDEL', '{keyward}:usage-holds', field)
  end
  if op == 'hset' then
    redis.call('HSET', key, field, value)
    if key == '{keyward}:usage' then
      redis.call('HINCRBY', '{keyward}:usage-versions', field, 1)
    end
  elseif op == 'hdel' then
    redis.call('HDEL', key, field)
    if key == '{keyward}:usage' then
      redis.call('HDEL', '{keyward}:usage-versions', field)
      redis.call('HDEL', '{keyward}:stats', field .. 'v', field .. 'r', field .. 'l')
    end
  elseif op == 'stats' then
    local valid, refused, last = string.match(value, '^(%d+) (%d+) (%d+)$')
    if not valid then
      return redis.error_reply('bad statistics ' .. value)
    end
    redis.call('HINCRBY', '{keyward}:stats', field .. 'v', valid)
    redis.call('HINCRBY', '{keyward}:stats', field .. 'r', refused)
    local seen = tonumber(redis.call('HGET', '{keyward}:stats', field .. 'l') or '0')
    if tonumber(last) > seen then
      redis.call('HSET', '{keyward}:stats', field .. 'l', last)
    end
  elseif op == 'audit' then
    audited = redis.call('RPUSH', key, value)
  elseif op == 'hist' then
    local n, ttl = string.match(value, '^(%d+) (%d+)$')
    if not n then
      return redis.error_reply('bad history count ' .. value)
    end
    redis.call('HINCRBY', key, field, n)
    redis.call('PEXPIRE', key, ttl)
  elseif op == 'atleast' then
    local now = tonumber(redis.call('HGET', key, field) or '0')
    if tonumber(value) > now then
      redis.call('HSET', key, field, value)
    end
  else
    return redis.error_reply('unknown batch operation ' .. op)
  end
  if (op == 'hset' or op == 'hdel') and key ~= '{keyward}:usage' then
    changed[#changed + 1] = key
    changed[#changed + 1] = field
  end
  i = i + 4
end
local j = 1
while j <= #changed do
  local entry = {'XADD', '{keyward}:changes', 'MAXLEN', '~', '100000', '*', 'node', node}
  local last = math.min(j + 1999, #changed)
  for k = j, last do
    entry[#entry + 1] = changed[k]
  end
  redis.call(unpack(entry))
  j = last + 1
end
return audited
";

/// Charges cells' counters if nobody changed them since they were read:
/// KEYS are the counters, their versions and their holds; ARGV (cell,
/// version read, new counters — empty: only confirm) triples. Returns one
/// `{1, version}` per cell whose counters were as read, `{0, version,
/// counters}` per cell whose counters moved, `{2, version}` per cell held
/// for an admin change (a write waits; a read goes through); each cell is
/// decided on its own.
const CHARGE: &str = r"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local i = 1
while i <= #ARGV do
  local field, seen, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local now = redis.call('HGET', KEYS[2], field) or '0'
  local held = value ~= '' and tonumber(redis.call('HGET', KEYS[3], field) or '0') > now_ms
  if now ~= seen then
    out[#out + 1] = {0, now, redis.call('HGET', KEYS[1], field)}
  elseif held then
    out[#out + 1] = {2, now, false}
  else
    if value ~= '' then
      redis.call('HSET', KEYS[1], field, value)
      now = tostring(redis.call('HINCRBY', KEYS[2], field, 1))
    end
    out[#out + 1] = {1, now, false}
  end
  i = i + 3
end
return out
";

/// Holds a cell's counters for an admin change for ARGV[2] ms (KEYS[1] is
/// the holds): other writes of them wait until the change lands (which
/// lifts the hold) or the hold expires.
const HOLD: &str = r"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now_ms + tonumber(ARGV[2]))
return 1
";

/// Change-stream entries read at most at once.
const FOLLOW_COUNT: usize = 100;

/// Connections for charges: limited verifications of different keys go
/// to Redis side by side.
const CHARGE_CONNECTIONS: usize = 8;

/// The Redis store.
pub(crate) struct RedisStore {
    target: Target,
    label: String,
    /// The connection, opened on first use and again after an error.
    con: Mutex<Option<Con>>,
    /// A second one for blocking reads of the change stream.
    follow_con: Mutex<Option<Con>>,
    apply: redis::Script,
    /// Connections for [`Store::charge`].
    charge_cons: Vec<Mutex<Option<Con>>>,
    charge: redis::Script,
    hold: redis::Script,
    /// This node, as it signs its change-stream entries.
    node: String,
    /// The last change-stream entry read (or there when the store opened).
    /// Its place: how many entries the stream had gained up to it
    /// (`entries-added`), so entries trimmed away unread can be told.
    cursor: Mutex<(String, u64)>,
}

fn redis_err(label: &str, e: &redis::RedisError) -> Error {
    Error::Storage(format!("{label}: {e}"))
}

/// A URL without its password, for messages.
pub(crate) fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// A connection to one server or to a cluster.
type Con = Box<dyn redis::ConnectionLike + Send>;

/// Where the store is.
enum Target {
    /// One server: `redis://` or, over TLS, `rediss://`.
    One(redis::Client),
    /// A Redis Cluster: `redis+cluster://H1:P1,H2:P2,…` or, over TLS,
    /// `rediss+cluster://…`. Every key of the store carries the hash tag
    /// `{keyward}`, so each batch, charge and stream read stays in one slot.
    Cluster { nodes: Vec<String>, certs: Option<redis::TlsCertificates> },
}

impl Target {
    /// Reads a store URL; `ca` is a PEM CA certificate to trust for TLS
    /// (else the system's roots).
    fn parse(url: &str, ca: Option<&[u8]>) -> std::result::Result<Self, String> {
        let certs = ca.map(|pem| redis::TlsCertificates { client_tls: None, root_cert: Some(pem.to_vec()) });
        let (scheme, rest) =
            url.split_once("://").ok_or("expected redis://, rediss://, redis+cluster:// or rediss+cluster://")?;
        match scheme {
            "redis" | "rediss" => {
                if ca.is_some() && scheme == "redis" {
                    return Err("a CA certificate is for rediss:// (TLS) only".into());
                }
                let client = match certs {
                    Some(certs) => redis::Client::build_with_tls(url, certs),
                    None => redis::Client::open(url),
                };
                client.map(Target::One).map_err(|e| e.to_string())
            }
            "redis+cluster" | "rediss+cluster" => {
                let tls = scheme == "rediss+cluster";
                if ca.is_some() && !tls {
                    return Err("a CA certificate is for rediss+cluster:// (TLS) only".into());
                }
                let (auth, hosts) = match rest.rsplit_once('@') {
                    Some((auth, hosts)) => (format!("{auth}@"), hosts),
                    None => (String::new(), rest),
                };
                let hosts = hosts.trim_end_matches('/');
                if hosts.contains('/') {
                    return Err("a cluster has one database (0): drop the /DB".into());
                }
                let node_scheme = if tls { "rediss" } else { "redis" };
                let nodes: Vec<String> = hosts
                    .split(',')
                    .map(|h| {
                        if h.is_empty() {
                            Err("an empty node address".to_owned())
                        } else {
                            Ok(format!("{node_scheme}://{auth}{h}"))
                        }
                    })
                    .collect::<std::result::Result<_, _>>()?;
                // Checked now: a bad address fails at open, not at first use.
                for n in &nodes {
                    redis::Client::open(n.as_str()).map_err(|e| e.to_string())?;
                }
                Ok(Target::Cluster { nodes, certs })
            }
            other => Err(format!(
                "unknown scheme `{other}://`: expected redis://, rediss://, redis+cluster:// or rediss+cluster://"
            )),
        }
    }

    /// A new connection whose reads wait at most `read_timeout`.
    fn connect(&self, read_timeout: Duration) -> redis::RedisResult<Con> {
        match self {
            Target::One(client) => {
                let con = client.get_connection_with_timeout(TIMEOUT)?;
                con.set_read_timeout(Some(read_timeout))?;
                con.set_write_timeout(Some(TIMEOUT))?;
                Ok(Box::new(con))
            }
            Target::Cluster { nodes, certs } => {
                let mut b = redis::cluster::ClusterClientBuilder::new(nodes.clone()).connection_timeout(TIMEOUT);
                if let Some(certs) = certs {
                    b = b.certs(certs.clone());
                }
                let con = b.build()?.get_connection()?;
                con.set_read_timeout(Some(read_timeout))?;
                con.set_write_timeout(Some(TIMEOUT))?;
                Ok(Box::new(con))
            }
        }
    }
}

impl RedisStore {
    /// Connects to `url` (see [`Target`]) and checks or writes the layout's
    /// magic and schema version. `ca`: a PEM CA certificate for TLS.
    pub(crate) fn open(url: &str, ca: Option<&[u8]>) -> Result<Self> {
        let label = shown(url);
        let target = Target::parse(url, ca).map_err(|e| Error::invalid("store", format!("{label}: {e}")))?;
        let node = {
            use rand_core::Rng;
            format!("{:016x}", crate::rng::os_rng().next_u64())
        };
        let store = Self {
            target,
            label,
            con: Mutex::new(None),
            follow_con: Mutex::new(None),
            apply: redis::Script::new(APPLY),
            charge_cons: (0..CHARGE_CONNECTIONS).map(|_| Mutex::new(None)).collect(),
            charge: redis::Script::new(CHARGE),
            hold: redis::Script::new(HOLD),
            node,
            cursor: Mutex::new(("0-0".into(), 0)),
        };
        store.init()?;
        // Before anything is loaded: a change made while loading is read
        // again from the stream (re-reading a record is idempotent).
        let (last, added, _) = store.stream_state()?;
        *store.cursor.lock().unwrap_or_else(PoisonError::into_inner) = (last, added);
        Ok(store)
    }

    /// Whether the database at `url` holds keyward's meta record (read
    /// without writing anything, unlike [`RedisStore::open`]).
    pub(crate) fn provisioned(url: &str, ca: Option<&[u8]>) -> Result<bool> {
        let label = shown(url);
        let target = Target::parse(url, ca).map_err(|e| Error::invalid("store", format!("{label}: {e}")))?;
        let mut con = target.connect(TIMEOUT).map_err(|e| redis_err(&label, &e))?;
        let found: i64 = redis::cmd("EXISTS").arg(META).query(&mut *con).map_err(|e| redis_err(&label, &e))?;
        Ok(found > 0)
    }

    /// Runs `f` on the connection, connecting first if needed; after an
    /// error the connection is dropped, so the next call connects again.
    fn with<T>(&self, f: impl FnOnce(&mut dyn redis::ConnectionLike) -> redis::RedisResult<T>) -> Result<T> {
        self.on(&self.con, TIMEOUT, f)
    }

    fn on<T>(
        &self,
        slot: &Mutex<Option<Con>>,
        read_timeout: Duration,
        f: impl FnOnce(&mut dyn redis::ConnectionLike) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            *guard = Some(self.target.connect(read_timeout).map_err(|e| redis_err(&self.label, &e))?);
        }
        let Some(con) = guard.as_mut() else {
            return Err(Error::Storage(format!("{}: not connected", self.label)));
        };
        let out = f(&mut **con);
        if out.is_err() {
            *guard = None;
        }
        out.map_err(|e| redis_err(&self.label, &e))
    }

    fn init(&self) -> Result<()> {
        let (magic, version): (Option<String>, Option<String>) =
            self.with(|c| redis::cmd("HMGET").arg(META).arg("magic").arg("schema_version").query(c))?;
        match (magic.as_deref(), version) {
            (None, None) => {
                let tables: i64 = self.with(|c| {
                    redis::cmd("EXISTS").arg(WORKSPACES).arg(KEYS).arg(TOOLS).arg(USAGE).arg(AUDIT).query(c)
                })?;
                if tables > 0 {
                    return Err(Error::Corrupt(format!("{}: keyward data without its meta record", self.label)));
                }
                self.with(|c| {
                    redis::cmd("HSET")
                        .arg(META)
                        .arg("magic")
                        .arg(MAGIC)
                        .arg("schema_version")
                        .arg(SCHEMA_VERSION)
                        .query::<()>(c)
                })
            }
            (Some(MAGIC), Some(v)) => {
                let found: u32 =
                    v.parse().map_err(|_| Error::Corrupt(format!("{}: bad schema version `{v}`", self.label)))?;
                if found > SCHEMA_VERSION {
                    return Err(Error::SchemaTooNew { found, supported: SCHEMA_VERSION });
                }
                Ok(())
            }
            _ => Err(Error::Corrupt(format!("{}: missing or foreign meta record", self.label))),
        }
    }

    /// The change stream now: its newest id, how many entries it ever
    /// gained, and how many it holds (`XINFO STREAM`; none yet: nothing).
    fn stream_state(&self) -> Result<(String, u64, u64)> {
        let info: redis::Value = match self.with(|c| redis::cmd("XINFO").arg("STREAM").arg(CHANGES).query(c)) {
            Ok(v) => v,
            Err(Error::Storage(m)) if m.contains("no such key") => return Ok(("0-0".into(), 0, 0)),
            Err(e) => return Err(e),
        };
        let pairs: Vec<(redis::Value, redis::Value)> = match info {
            redis::Value::Map(pairs) => pairs,
            redis::Value::Array(flat) => {
                let mut it = flat.into_iter();
                std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
            }
            _ => Vec::new(),
        };
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::SimpleString(s) => s.clone(),
            redis::Value::Int(n) => n.to_string(),
            _ => String::new(),
        };
        let field = |name: &str| pairs.iter().find(|(k, _)| text(k) == name).map(|(_, v)| text(v));
        let count = |name: &str| {
            field(name)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Error::Corrupt(format!("{CHANGES}: XINFO without `{name}`")))
        };
        let last = field("last-generated-id").unwrap_or_else(|| "0-0".into());
        Ok((last, count("entries-added")?, count("length")?))
    }

    fn all(&self, table: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.with(|c| redis::cmd("HGETALL").arg(table).query(c))
    }
}

fn id16(field: &[u8], table: &str) -> Result<[u8; 16]> {
    field.try_into().map_err(|_| Error::Corrupt(format!("{table}: a field of {} bytes", field.len())))
}

/// The Redis key of one history bucket.
fn history_key(subject: [u8; 16], g: Granularity, start: u64) -> String {
    format!("{HISTORY}{}:{}:{start}", keyward_core::hex::encode(&subject), g.tag())
}

fn id32(field: &[u8], table: &str) -> Result<[u8; 32]> {
    field.try_into().map_err(|_| Error::Corrupt(format!("{table}: a field of {} bytes", field.len())))
}

impl Store for RedisStore {
    fn commit(&self, batch: &Batch) -> Result<Option<u64>> {
        let mut args: Vec<Vec<u8>> = Vec::with_capacity(batch.changes.len() * 4);
        let mut op = |op: &str, key: &str, field: &[u8], value: Vec<u8>| {
            args.extend([op.as_bytes().to_vec(), key.as_bytes().to_vec(), field.to_vec(), value]);
        };
        for change in &batch.changes {
            match change {
                Change::Workspace(ws) => op("hset", WORKSPACES, &ws.policy.id.0, encode_record(ws)),
                Change::Tool(t) => {
                    let mut field = t.policy.workspace.0.to_vec();
                    field.extend_from_slice(t.policy.name.as_bytes());
                    op("hset", TOOLS, &field, encode_record(t));
                }
                Change::Key(rec) => op("hset", KEYS, &rec.policy.id.0, encode_record(rec)),
                Change::KeyDeleted(id) => {
                    op("hdel", KEYS, &id.0, Vec::new());
                    // Its history buckets expire with their retention.
                    op("hdel", LAST_USED, &id.0, Vec::new());
                }
                Change::Usage(id, rec) => op("hset", USAGE, &id.0, encode_record(rec)),
                Change::UsageAt(id, seen, rec) => op("usageat", &seen.to_string(), &id.0, encode_record(rec)),
                Change::UsageStats(id, st) => {
                    let last = st.last_used_at.map_or(0, keyward_core::UnixMillis::get);
                    op("stats", STATS, &id.0, format!("{} {} {last}", st.valid, st.refused).into_bytes());
                }
                Change::UsageDeleted(id) => op("hdel", USAGE, &id.0, Vec::new()),
                Change::Nonce(id, state) => op("hset", NONCES, &id.0, encode_record(state)),
                Change::NonceDeleted(id) => op("hdel", NONCES, &id.0, Vec::new()),
                Change::Session(hash, rec) => op("hset", SESSIONS, hash, encode_record(rec)),
                Change::SessionDeleted(hash) => op("hdel", SESSIONS, hash, Vec::new()),
                Change::Audit(d) => {
                    // The sequence number is the event's place in the list.
                    op("audit", AUDIT, b"", encode_record(&d.event(0)));
                }
                Change::Serial(ws, n) => op("atleast", SERIALS, &ws.0, n.to_string().into_bytes()),
                Change::LastUsed(id, at) => op("atleast", LAST_USED, &id.0, at.to_string().into_bytes()),
                Change::History(delta) => {
                    for g in Granularity::ALL {
                        let mut buckets: Vec<HistoryBucket> = Vec::new();
                        for &(start, code, n) in &delta.counts {
                            history::add(&mut buckets, g.start_of(start), code, n);
                        }
                        for b in buckets {
                            let key = history_key(delta.subject, g, b.start.get());
                            // Relative to the engine's clock, which decided
                            // the bucket (Redis's may differ).
                            let end = b.start.get().saturating_add(g.ms()).saturating_add(g.retention_ms());
                            let ttl = end.saturating_sub(delta.now.get()).max(1);
                            for (code, n) in b.counts {
                                let value = format!("{n} {ttl}").into_bytes();
                                op("hist", &key, code.as_str().as_bytes(), value);
                            }
                        }
                    }
                }
                Change::Probe => {}
                // The sequence number is the event's place in the list: a
                // trim would renumber the events kept. The engine refuses an
                // audit retention on this store, so none comes here.
                Change::AuditFrom(_) => {}
                Change::AuditTrim(_) => {
                    return Err(Error::Storage("the Redis store keeps its audit log forever".into()));
                }
            }
        }
        let mut call = self.apply.prepare_invoke();
        // Every key of the store shares the hash tag `{keyward}`: naming one
        // routes the script to the Redis Cluster node holding all of them.
        call.key(META).arg(self.node.as_str());
        for a in &args {
            call.arg(a.as_slice());
        }
        let audited = self.with(|c| call.invoke::<i64>(c)).map_err(|e| match e {
            Error::Storage(m) if m.contains("KEYWARD_MOVED") => Error::Conflict(crate::verify::MOVED.into()),
            e => e,
        })?;
        Ok(u64::try_from(audited).ok().filter(|&seq| seq > 0))
    }

    fn charge_many(&self, cells: &[(KeyId, u64, Option<&UsageRecord>)]) -> Result<Vec<Charged>> {
        let mut call = self.charge.prepare_invoke();
        call.key(USAGE).key(USAGE_VERSIONS).key(USAGE_HOLDS);
        for (owner, seen, next) in cells {
            call.arg(&owner.0[..]).arg(seen.to_string()).arg(next.map(encode_record).unwrap_or_default());
        }
        // Any free connection; when all are busy, one picked by key. There
        // are always CHARGE_CONNECTIONS of them, so the last fallback (the
        // store's main connection) is never taken.
        let by_key = cells.first().map_or(0, |(owner, ..)| usize::from(owner.0[0])) % CHARGE_CONNECTIONS;
        let free = self.charge_cons.iter().find(|m| m.try_lock().is_ok());
        let slot = free.or_else(|| self.charge_cons.get(by_key)).unwrap_or(&self.con);
        // A connection broken while idle fails once: try once more on a new
        // one (safe: a charge that did land meanwhile has moved the version,
        // so the second attempt only reads).
        type Reply = Vec<(i64, String, Option<Vec<u8>>)>;
        let replies: Reply = match self.on(slot, TIMEOUT, |c| call.invoke(c)) {
            Ok(r) => r,
            Err(_) => self.on(slot, TIMEOUT, |c| call.invoke(c))?,
        };
        if replies.len() != cells.len() {
            return Err(Error::Storage(format!(
                "{}: {} answers to {} charges",
                self.label,
                replies.len(),
                cells.len()
            )));
        }
        replies
            .into_iter()
            .map(|(done, version, rec)| {
                let version = version
                    .parse()
                    .map_err(|_| Error::Corrupt(format!("{USAGE_VERSIONS}: bad version `{version}`")))?;
                Ok(match done {
                    1 => Charged::Done(version),
                    2 => Charged::Held,
                    _ => Charged::Moved(version, rec.map(|r| decode_record(&r).map(Box::new)).transpose()?),
                })
            })
            .collect()
    }

    fn history(&self, subject: [u8; 16], granularity: Granularity, from: u64, to: u64) -> Result<Vec<HistoryBucket>> {
        let step = granularity.ms();
        let starts: Vec<u64> = (granularity.start_of(from)..to)
            .step_by(usize::try_from(step).unwrap_or(usize::MAX))
            .filter(|s| *s >= from)
            .collect();
        let mut pipe = redis::pipe();
        for start in &starts {
            pipe.cmd("HGETALL").arg(history_key(subject, granularity, *start));
        }
        let rows: Vec<Vec<(String, u64)>> = self.with(|c| pipe.query(c))?;
        let mut out = Vec::new();
        for (start, row) in starts.into_iter().zip(rows) {
            let mut counts = Vec::new();
            for (code, n) in row {
                let code =
                    Code::parse(&code).ok_or_else(|| Error::Corrupt(format!("{HISTORY}: unknown code {code}")))?;
                history::add_count(&mut counts, code, n);
            }
            if !counts.is_empty() {
                out.push(HistoryBucket { start: keyward_core::UnixMillis(start), counts });
            }
        }
        Ok(out)
    }

    fn last_used(&self, id: KeyId) -> Result<Option<u64>> {
        self.with(|c| redis::cmd("HGET").arg(LAST_USED).arg(&id.0[..]).query(c))
    }

    fn reserve_serials(&self, ws: WorkspaceId, n: u64) -> Result<Option<u64>> {
        let n = i64::try_from(n).map_err(|_| Error::invalid("keys", "too many serials at once"))?;
        let last: i64 = self.with(|c| redis::cmd("HINCRBY").arg(SERIALS).arg(&ws.0[..]).arg(n).query(c))?;
        u64::try_from(last).map(Some).map_err(|_| Error::Corrupt(format!("{SERIALS}: a negative serial")))
    }

    fn load(&self) -> Result<Loaded> {
        let mut out = Loaded::default();
        for (_, v) in self.all(WORKSPACES)? {
            out.workspaces.push(Workspace::decode(&v)?);
        }
        for (_, v) in self.all(TOOLS)? {
            out.tools.push(ToolRecord::decode(&v)?);
        }
        for (_, v) in self.all(KEYS)? {
            out.keys.push(KeyRecord::decode(&v)?);
        }
        let mut usage: std::collections::HashMap<[u8; 16], UsageRecord> = std::collections::HashMap::new();
        for (k, v) in self.all(USAGE)? {
            usage.insert(id16(&k, USAGE)?, decode_record(&v)?);
        }
        for (k, v) in self.all(STATS)? {
            let (id, which) =
                k.split_at_checked(16).ok_or_else(|| Error::Corrupt(format!("{STATS}: a short field")))?;
            let n: u64 = std::str::from_utf8(&v)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::Corrupt(format!("{STATS}: a value that is not a count")))?;
            let mut stats = UsageStats::default();
            match which {
                b"v" => stats.valid = n,
                b"r" => stats.refused = n,
                b"l" => stats.last_used_at = (n > 0).then_some(keyward_core::UnixMillis(n)),
                _ => return Err(Error::Corrupt(format!("{STATS}: an unknown field"))),
            }
            usage.entry(id16(id, STATS)?).or_default().add_stats(&stats);
        }
        out.usage = usage.into_iter().map(|(id, rec)| (KeyId(id), rec)).collect();
        for (k, v) in self.all(NONCES)? {
            out.nonces.push((KeyId(id16(&k, NONCES)?), decode_record(&v)?));
        }
        for (k, v) in self.all(SESSIONS)? {
            out.sessions.push((id32(&k, SESSIONS)?, decode_record(&v)?));
        }
        for (k, v) in self.all(LAST_USED)? {
            let at = std::str::from_utf8(&v)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::Corrupt(format!("{LAST_USED}: a value that is not a time")))?;
            out.last_used.push((KeyId(id16(&k, LAST_USED)?), at));
        }
        for (k, v) in self.all(SERIALS)? {
            let n = std::str::from_utf8(&v)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::Corrupt(format!("{SERIALS}: a value that is not a count")))?;
            out.serials.push((WorkspaceId(id16(&k, SERIALS)?), n));
        }
        Ok(out)
    }

    fn audit(&self, ws: Option<WorkspaceId>, after: u64, limit: usize) -> Result<Page<AuditEvent>> {
        const CHUNK: u64 = 256;
        let mut items = Vec::with_capacity(limit);
        let mut next = after;
        loop {
            let start = i64::try_from(next).unwrap_or(i64::MAX);
            let stop = i64::try_from(next.saturating_add(CHUNK - 1)).unwrap_or(i64::MAX);
            let rows: Vec<Vec<u8>> = self.with(|c| redis::cmd("LRANGE").arg(AUDIT).arg(start).arg(stop).query(c))?;
            let got = rows.len() as u64;
            for (i, bytes) in rows.into_iter().enumerate() {
                let mut ev: AuditEvent = decode_record(&bytes)?;
                ev.seq = next + i as u64 + 1;
                if ws.is_some() && ev.workspace != ws {
                    continue;
                }
                if items.len() == limit {
                    let next_cursor = items.last().map(|e: &AuditEvent| e.seq.to_string());
                    return Ok(Page { items, next_cursor });
                }
                items.push(ev);
            }
            if got < CHUNK {
                return Ok(Page { items, next_cursor: None });
            }
            next += got;
        }
    }

    fn shared(&self) -> bool {
        true
    }

    fn hold(&self, owner: KeyId, for_ms: u64) -> Result<()> {
        let mut call = self.hold.prepare_invoke();
        call.key(USAGE_HOLDS).arg(&owner.0[..]).arg(for_ms);
        self.with(|c| call.invoke::<i64>(c)).map(drop)
    }

    fn reconnect(&self) {
        for slot in std::iter::once(&self.con).chain(&self.charge_cons) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    fn follow(&self, wait: Duration) -> Result<Option<Touched>> {
        let (cursor, read) = self.cursor.lock().unwrap_or_else(PoisonError::into_inner).clone();
        // Entries after the cursor that were trimmed away unread (this node
        // was away, or far behind) cannot be followed, nor can a stream that
        // lost entries this node had read (Redis restarted from an older
        // snapshot or AOF): read everything.
        let (last, added, length) = self.stream_state()?;
        if added < read || added - length > read {
            // The place is taken before reading: a change made meanwhile
            // is read again after (re-reading a record is idempotent).
            return Ok(Some(Touched { records: Vec::new(), everything: true, cursor: (last, added) }));
        }
        let block = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let reply: redis::Value = self.on(&self.follow_con, wait + TIMEOUT, |c| {
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(FOLLOW_COUNT)
                .arg("BLOCK")
                .arg(block)
                .arg("STREAMS")
                .arg(CHANGES)
                .arg(&cursor)
                .query(c)
        })?;
        let entries = stream_entries(reply);
        let read = read + entries.len() as u64;
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut last = None;
        for (id, fields) in entries {
            last = Some(id);
            // This node's own entries are read too: a commit whose answer
            // was lost (the connection broke after Redis ran the script)
            // landed without this node publishing it, and only the stream
            // tells. Reading a record again is idempotent.
            for pair in fields.chunks_exact(2).skip(1) {
                if let [table, field] = pair
                    && !records.iter().any(|(t, f)| t == table && f == field)
                {
                    records.push((table.clone(), field.clone()));
                }
            }
        }
        Ok(last.map(|id| Touched { records, everything: false, cursor: (id, read) }))
    }

    fn read_followed(&self, touched: Touched) -> Result<Vec<Followed>> {
        if touched.everything {
            let loaded = self.load()?;
            *self.cursor.lock().unwrap_or_else(PoisonError::into_inner) = touched.cursor;
            return Ok(vec![Followed::Reload(Box::new(loaded))]);
        }
        let mut out = Vec::with_capacity(touched.records.len());
        for (table, field) in touched.records {
            let table = String::from_utf8_lossy(&table).into_owned();
            let value: Option<Vec<u8>> = self.with(|c| redis::cmd("HGET").arg(&table).arg(&field).query(c))?;
            out.push(match table.as_str() {
                WORKSPACES => Followed::Workspace(
                    WorkspaceId(id16(&field, WORKSPACES)?),
                    value.map(|v| Workspace::decode(&v)).transpose()?,
                ),
                TOOLS => {
                    let (ws, name) =
                        field.split_at_checked(16).ok_or_else(|| Error::Corrupt(format!("{TOOLS}: a short field")))?;
                    Followed::Tool(
                        WorkspaceId(id16(ws, TOOLS)?),
                        String::from_utf8_lossy(name).into_owned(),
                        value.map(|v| ToolRecord::decode(&v)).transpose()?,
                    )
                }
                KEYS => Followed::Key(
                    KeyId(id16(&field, KEYS)?),
                    value.map(|v| KeyRecord::decode(&v).map(Box::new)).transpose()?,
                ),
                NONCES => Followed::Nonce(KeyId(id16(&field, NONCES)?), value.map(|v| decode_record(&v)).transpose()?),
                SESSIONS => Followed::Session(id32(&field, SESSIONS)?, value.map(|v| decode_record(&v)).transpose()?),
                _ => continue,
            });
        }
        // Only once every record was read: a failure reads them again.
        *self.cursor.lock().unwrap_or_else(PoisonError::into_inner) = touched.cursor;
        Ok(out)
    }

    fn check(&self) -> Result<usize> {
        let rows = self.all(KEYS)?;
        for (_, v) in &rows {
            KeyRecord::decode(v)?;
        }
        Ok(rows.len())
    }
}

/// The entries of an `XREAD` reply for one stream: (id, field and value
/// bytes in order). A timeout (nil) has none.
fn stream_entries(reply: redis::Value) -> Vec<(String, Vec<Vec<u8>>)> {
    use redis::Value as V;
    let bytes = |v: V| match v {
        V::BulkString(b) => Some(b),
        V::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    };
    let streams = match reply {
        V::Array(streams) => streams,
        V::Map(pairs) => pairs.into_iter().map(|(k, v)| V::Array(vec![k, v])).collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for stream in streams {
        let V::Array(mut parts) = stream else { continue };
        let Some(V::Array(entries)) = parts.pop() else { continue };
        for entry in entries {
            let V::Array(mut e) = entry else { continue };
            let (Some(V::Array(fields)), Some(id)) = (e.pop(), e.pop().and_then(bytes)) else { continue };
            let fields: Vec<Vec<u8>> = fields.into_iter().filter_map(bytes).collect();
            out.push((String::from_utf8_lossy(&id).into_owned(), fields));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use keyward_core::{Limits, Prefix, UnixMillis, WorkspacePolicy};

    use super::*;
    use crate::model::Workspace;

    fn workspace(n: u8) -> Change {
        Change::Workspace(Workspace {
            policy: WorkspacePolicy {
                id: WorkspaceId([n; 16]),
                name: format!("ws{n}"),
                api_access: true,
                prefix: Prefix::parse("kw_live").unwrap(),
                ip_rules: Default::default(),
                default_limits: Limits::default(),
            },
            created_at: UnixMillis(1),
            limit_sync: crate::LimitSync::Exact,
            key_ttl: crate::KeyTtl::default(),
        })
    }

    /// What `store` follows next: the records named, read.
    fn followed(store: &RedisStore) -> Vec<Followed> {
        match store.follow(Duration::from_millis(10)).unwrap() {
            Some(touched) => store.read_followed(touched).unwrap(),
            None => Vec::new(),
        }
    }

    fn names(items: &[Followed]) -> Vec<String> {
        items
            .iter()
            .map(|f| match f {
                Followed::Workspace(_, Some(ws)) => ws.policy.name.clone(),
                Followed::Reload(all) => {
                    format!(
                        "reload:{}",
                        all.workspaces.iter().map(|w| w.policy.name.as_str()).collect::<Vec<_>>().join(",")
                    )
                }
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_node_the_stream_was_trimmed_past_reads_everything_again() {
        let Some(redis) = crate::store::redis_server::Redis::start() else { return };
        let (a, b) = (RedisStore::open(&redis.url(), None).unwrap(), RedisStore::open(&redis.url(), None).unwrap());
        let commit = |n| b.commit(&Batch { changes: vec![workspace(n)] }).unwrap();
        commit(1);
        assert_eq!(names(&followed(&a)), ["ws1"]);
        commit(2);
        commit(3);
        // Both entries a has not read are dropped: a reads everything.
        let mut raw = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
        redis::cmd("XTRIM").arg(CHANGES).arg("MAXLEN").arg(0).query::<i64>(&mut raw).unwrap();
        let reloaded = names(&followed(&a));
        assert_eq!(reloaded.len(), 1);
        let mut all: Vec<&str> = reloaded[0].trim_start_matches("reload:").split(',').collect();
        all.sort_unstable();
        assert_eq!(all, ["ws1", "ws2", "ws3"]);
        // Then it follows entry by entry again.
        commit(4);
        assert_eq!(names(&followed(&a)), ["ws4"]);
        // A trim of entries a has read changes nothing.
        redis::cmd("XTRIM").arg(CHANGES).arg("MAXLEN").arg(0).query::<i64>(&mut raw).unwrap();
        commit(5);
        assert_eq!(names(&followed(&a)), ["ws5"]);
        // A stream that lost entries a had read (Redis back from an older
        // copy): a reads everything again.
        redis::cmd("DEL").arg(CHANGES).query::<i64>(&mut raw).unwrap();
        commit(6);
        let reloaded = names(&followed(&a));
        assert_eq!(reloaded.len(), 1, "{reloaded:?}");
        assert_eq!(reloaded[0].split(',').count(), 6, "{reloaded:?}");
        commit(7);
        assert_eq!(names(&followed(&a)), ["ws7"]);
    }
}
