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

use super::{Batch, Change, Loaded, Store};
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

/// Schema of the Redis layout this build writes.
const SCHEMA_VERSION: u32 = 1;
/// Value of `magic` in [`META`].
const MAGIC: &str = "keyward";
/// How long a connect, read or write may take before the call fails.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Applies a batch: ARGV is a list of (op, key, field, value) quadruples;
/// `hset`, `hdel`, or `audit` (RPUSH of the value; key and field unused).
const APPLY: &str = r"
local i = 1
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
  i = i + 4
end
return #ARGV / 4
";

/// The Redis store.
pub(crate) struct RedisStore {
    client: redis::Client,
    label: String,
    /// The connection, opened on first use and again after an error.
    con: Mutex<Option<redis::Connection>>,
    apply: redis::Script,
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
        let store = Self { client, label, con: Mutex::new(None), apply: redis::Script::new(APPLY) };
        store.init()?;
        Ok(store)
    }

    /// Runs `f` on the connection, connecting first if needed; after an
    /// error the connection is dropped, so the next call connects again.
    fn with<T>(&self, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T> {
        let mut guard = self.con.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            let con = self.client.get_connection_with_timeout(TIMEOUT).map_err(|e| redis_err(&self.label, &e))?;
            con.set_read_timeout(Some(TIMEOUT)).map_err(|e| redis_err(&self.label, &e))?;
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
                    let ev = AuditEvent {
                        seq: 0,
                        at: d.at,
                        actor: d.actor.clone(),
                        action: d.action,
                        workspace: d.workspace,
                        target: d.target.clone(),
                        detail: d.detail.clone(),
                    };
                    op("audit", AUDIT, b"", encode_record(&ev));
                }
                Change::Probe => {}
            }
        }
        let mut call = self.apply.prepare_invoke();
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

    fn check(&self) -> Result<usize> {
        let rows = self.all(KEYS)?;
        for (_, v) in &rows {
            decode_record::<KeyRecord>(v)?;
        }
        Ok(rows.len())
    }
}
