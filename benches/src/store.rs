//! The Redis that `keyward-loadgen --store` runs against: finding keyward's
//! data in it before a run, and removing it (only with `--store-flush`, or
//! after a run, when all of it is what that run wrote).
//!
//! Every key the engine writes carries the hash tag `{keyward}`
//! (docs/cluster.md, "Layout in Redis"), so `{keyward}:*` is all of it and
//! nothing else. The URL is read by the same `redis` crate the engine uses,
//! so both talk to the same host and database number.

use std::time::Duration;

use keyward_core::WorkspaceId;

/// Every Redis key keyward writes (`{` and `}` are not special in a
/// `SCAN MATCH` pattern).
pub const PATTERN: &str = "{keyward}:*";

/// The engine's hashes of workspaces and of API keys (docs/cluster.md).
const WORKSPACES: &str = "{keyward}:workspaces";
const KEYS: &str = "{keyward}:keys";

/// How long connecting, reading and writing may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `url` without its password, for messages.
pub fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

fn connect(url: &str) -> Result<redis::Connection, String> {
    let fail = |e: redis::RedisError| format!("{}: {e}", shown(url));
    let client = redis::Client::open(url).map_err(fail)?;
    let con = client.get_connection_with_timeout(TIMEOUT).map_err(fail)?;
    con.set_read_timeout(Some(TIMEOUT)).map_err(fail)?;
    con.set_write_timeout(Some(TIMEOUT)).map_err(fail)?;
    Ok(con)
}

/// The keys matching [`PATTERN`] in the database `url` names, sorted.
pub fn keyward_keys(url: &str) -> Result<Vec<String>, String> {
    let mut con = connect(url)?;
    let mut keys = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let (next, batch): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("MATCH")
            .arg(PATTERN)
            .arg("COUNT")
            .arg(1_000)
            .query(&mut con)
            .map_err(|e| format!("{}: SCAN: {e}", shown(url)))?;
        keys.extend(batch);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    // SCAN may return a key more than once.
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

/// Removes `keys` (`UNLINK`: Redis frees them in the background) and
/// returns how many existed.
pub fn remove(url: &str, keys: &[String]) -> Result<u64, String> {
    let mut con = connect(url)?;
    let mut removed = 0;
    for chunk in keys.chunks(100) {
        let n: u64 =
            redis::cmd("UNLINK").arg(chunk).query(&mut con).map_err(|e| format!("{}: UNLINK: {e}", shown(url)))?;
        removed += n;
    }
    Ok(removed)
}

/// What a run wrote to Redis: enough to tell its data from anyone else's
/// before deleting it.
#[derive(Clone, Debug)]
pub struct Written {
    /// The workspaces the run created.
    pub workspaces: Vec<WorkspaceId>,
    /// API keys the run created in it.
    pub keys: u64,
}

/// Why the keyward data in `url` is more than `written` describes (another
/// client wrote there too), or `None` when it is exactly that.
pub fn foreign(url: &str, written: &Written) -> Result<Option<String>, String> {
    let mut con = connect(url)?;
    let fail = |e: redis::RedisError| format!("{}: {e}", shown(url));
    let mut workspaces: Vec<Vec<u8>> = redis::cmd("HKEYS").arg(WORKSPACES).query(&mut con).map_err(fail)?;
    let mut ours: Vec<Vec<u8>> = written.workspaces.iter().map(|w| w.0.to_vec()).collect();
    workspaces.sort_unstable();
    ours.sort_unstable();
    if workspaces != ours {
        return Ok(Some(format!("{} workspaces where this run created {}", workspaces.len(), ours.len())));
    }
    let keys: u64 = redis::cmd("HLEN").arg(KEYS).query(&mut con).map_err(fail)?;
    if keys != written.keys {
        return Ok(Some(format!("{keys} API keys where this run created {}", written.keys)));
    }
    Ok(None)
}
