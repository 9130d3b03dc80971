//! The shared store: one Redis database that several nodes can use.
//!
//! Every record is a field of one hash per table, under the hash tag
//! `{keyward}` (so one batch's keys share a Redis Cluster slot), holding the
//! same bytes as the redb tables (`keyward_core::encode_record`). A batch is
//! one Lua script: Redis runs it whole, with nothing of another client in
//! between, so a batch lands all of it or none of it. Audit events are a
//! list; an event's sequence number is its position in it, from 1.
//!
//! If Redis cannot be reached the commit fails, nothing changes in memory,
//! and the next commit connects again.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use keyward_core::{KeyId, WorkspaceId, decode_record, encode_record};

use super::{Batch, Change, Followed, Loaded, Store};
use crate::error::{Error, Result};
use crate::model::{AuditEvent, KeyRecord, Page};

const META: &str = "{keyward}:meta";
const WORKSPACES: &str = "{keyward}:workspaces";
const TOOLS: &str = "{keyward}:tools";
const KEYS: &str = "{keyward}:keys";
const USAGE: &str = "{keyward}:usage";
const NONCES: &str = "{keyward}:nonces";
const SESSIONS: &str = "{keyward}:sessions";
const AUDIT: &str = "{keyward}:audit";
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
/// value) quadruples; `hset`, `hdel`, or `audit` (RPUSH of the value; key
/// and field unused). Every `hset`/`hdel` of a followed table is named in
/// one change-stream entry (several for a very large batch), in the same
/// script, so a change and its announcement land together.
const APPLY: &str = r"
local node = ARGV[1]
local changed = {}
local i = 2
while i <= #ARGV do
  local op, key, field, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if op == 'hset' then
    redis.call('HSET', key, field, value)
  elseif op == 'hdel' then
    redis.call('HDEL', key, field)
  elseif op == 'audit' then
    redis.call('RPUSH', key, value)
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
return (#ARGV - 1) / 4
";

/// The Redis store.
pub(crate) struct RedisStore {
    client: redis::Client,
    label: String,
    /// The connection, opened on first use and again after an error.
    con: Mutex<Option<redis::Connection>>,
    /// A second one for blocking reads of the change stream.
    follow_con: Mutex<Option<redis::Connection>>,
    apply: redis::Script,
    /// This node, as it signs its change-stream entries.
    node: String,
    /// The last change-stream entry read (or there when the store opened).
    cursor: Mutex<String>,
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

impl RedisStore {
    /// Connects to `url` (`redis://HOST:PORT/DB`) and checks or writes the
    /// layout's magic and schema version.
    pub(crate) fn open(url: &str) -> Result<Self> {
        let label = shown(url);
        let client = redis::Client::open(url).map_err(|e| Error::invalid("store", format!("{label}: {e}")))?;
        let node = {
            use rand_core::Rng;
            format!("{:016x}", crate::rng::os_rng().next_u64())
        };
        let store = Self {
            client,
            label,
            con: Mutex::new(None),
            follow_con: Mutex::new(None),
            apply: redis::Script::new(APPLY),
            node,
            cursor: Mutex::new("0-0".into()),
        };
        store.init()?;
        // Before anything is loaded: a change made while loading is read
        // again from the stream (re-reading a record is idempotent).
        let last: redis::Value =
            store.with(|c| redis::cmd("XREVRANGE").arg(CHANGES).arg("+").arg("-").arg("COUNT").arg(1).query(c))?;
        // Shaped like one stream of an XREAD reply.
        let as_read = redis::Value::Array(vec![redis::Value::Array(vec![
            redis::Value::BulkString(CHANGES.as_bytes().to_vec()),
            last,
        ])]);
        if let Some((id, _)) = stream_entries(as_read).into_iter().next() {
            *store.cursor.lock().unwrap_or_else(PoisonError::into_inner) = id;
        }
        Ok(store)
    }

    /// Runs `f` on the connection, connecting first if needed; after an
    /// error the connection is dropped, so the next call connects again.
    fn with<T>(&self, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T> {
        self.on(&self.con, TIMEOUT, f)
    }

    fn on<T>(
        &self,
        slot: &Mutex<Option<redis::Connection>>,
        read_timeout: Duration,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            let con = self.client.get_connection_with_timeout(TIMEOUT).map_err(|e| redis_err(&self.label, &e))?;
            con.set_read_timeout(Some(read_timeout)).map_err(|e| redis_err(&self.label, &e))?;
            con.set_write_timeout(Some(TIMEOUT)).map_err(|e| redis_err(&self.label, &e))?;
            *guard = Some(con);
        }
        let Some(con) = guard.as_mut() else {
            return Err(Error::Storage(format!("{}: not connected", self.label)));
        };
        let out = f(con);
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

    fn all(&self, table: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.with(|c| redis::cmd("HGETALL").arg(table).query(c))
    }
}

fn id16(field: &[u8], table: &str) -> Result<[u8; 16]> {
    field.try_into().map_err(|_| Error::Corrupt(format!("{table}: a field of {} bytes", field.len())))
}

fn id32(field: &[u8], table: &str) -> Result<[u8; 32]> {
    field.try_into().map_err(|_| Error::Corrupt(format!("{table}: a field of {} bytes", field.len())))
}

impl Store for RedisStore {
    fn commit(&self, batch: &Batch) -> Result<()> {
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
                Change::KeyDeleted(id) => op("hdel", KEYS, &id.0, Vec::new()),
                Change::Usage(id, rec) => op("hset", USAGE, &id.0, encode_record(rec)),
                Change::UsageDeleted(id) => op("hdel", USAGE, &id.0, Vec::new()),
                Change::Nonce(id, state) => op("hset", NONCES, &id.0, encode_record(state)),
                Change::NonceDeleted(id) => op("hdel", NONCES, &id.0, Vec::new()),
                Change::Session(hash, rec) => op("hset", SESSIONS, hash, encode_record(rec)),
                Change::SessionDeleted(hash) => op("hdel", SESSIONS, hash, Vec::new()),
                Change::Audit(d) => {
                    // The sequence number is the event's place in the list.
                    op("audit", AUDIT, b"", encode_record(&d.event(0)));
                }
                Change::Probe => {}
            }
        }
        let mut call = self.apply.prepare_invoke();
        call.arg(self.node.as_str());
        for a in &args {
            call.arg(a.as_slice());
        }
        self.with(|c| call.invoke::<i64>(c)).map(drop)
    }

    fn load(&self) -> Result<Loaded> {
        let mut out = Loaded::default();
        for (_, v) in self.all(WORKSPACES)? {
            out.workspaces.push(decode_record(&v)?);
        }
        for (_, v) in self.all(TOOLS)? {
            out.tools.push(decode_record(&v)?);
        }
        for (_, v) in self.all(KEYS)? {
            out.keys.push(decode_record(&v)?);
        }
        for (k, v) in self.all(USAGE)? {
            out.usage.push((KeyId(id16(&k, USAGE)?), decode_record(&v)?));
        }
        for (k, v) in self.all(NONCES)? {
            out.nonces.push((KeyId(id16(&k, NONCES)?), decode_record(&v)?));
        }
        for (k, v) in self.all(SESSIONS)? {
            out.sessions.push((id32(&k, SESSIONS)?, decode_record(&v)?));
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

    fn follow(&self, wait: Duration) -> Result<Vec<Followed>> {
        let cursor = self.cursor.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let block = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let reply: redis::Value = self.on(&self.follow_con, wait + TIMEOUT, |c| {
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(block)
                .arg("STREAMS")
                .arg(CHANGES)
                .arg(&cursor)
                .query(c)
        })?;
        let mut touched: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut last = None;
        for (id, fields) in stream_entries(reply) {
            last = Some(id);
            let mut pairs = fields.chunks_exact(2);
            let own = matches!(pairs.next(), Some([n, v]) if n == b"node" && v == self.node.as_bytes());
            if own {
                continue;
            }
            for pair in fields.chunks_exact(2).skip(1) {
                if let [table, field] = pair
                    && !touched.iter().any(|(t, f)| t == table && f == field)
                {
                    touched.push((table.clone(), field.clone()));
                }
            }
        }
        let mut out = Vec::with_capacity(touched.len());
        for (table, field) in touched {
            let table = String::from_utf8_lossy(&table).into_owned();
            let value: Option<Vec<u8>> = self.with(|c| redis::cmd("HGET").arg(&table).arg(&field).query(c))?;
            out.push(match table.as_str() {
                WORKSPACES => Followed::Workspace(
                    WorkspaceId(id16(&field, WORKSPACES)?),
                    value.map(|v| decode_record(&v)).transpose()?,
                ),
                TOOLS => {
                    let (ws, name) =
                        field.split_at_checked(16).ok_or_else(|| Error::Corrupt(format!("{TOOLS}: a short field")))?;
                    Followed::Tool(
                        WorkspaceId(id16(ws, TOOLS)?),
                        String::from_utf8_lossy(name).into_owned(),
                        value.map(|v| decode_record(&v)).transpose()?,
                    )
                }
                KEYS => Followed::Key(
                    KeyId(id16(&field, KEYS)?),
                    value.map(|v| decode_record(&v).map(Box::new)).transpose()?,
                ),
                NONCES => Followed::Nonce(KeyId(id16(&field, NONCES)?), value.map(|v| decode_record(&v)).transpose()?),
                SESSIONS => Followed::Session(id32(&field, SESSIONS)?, value.map(|v| decode_record(&v)).transpose()?),
                _ => continue,
            });
        }
        if let Some(id) = last {
            *self.cursor.lock().unwrap_or_else(PoisonError::into_inner) = id;
        }
        Ok(out)
    }

    fn check(&self) -> Result<usize> {
        let rows = self.all(KEYS)?;
        for (_, v) in &rows {
            decode_record::<KeyRecord>(v)?;
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
