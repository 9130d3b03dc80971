//! `keyward`: manage keys in a keyward database, or serve the HTTP API.
//!
//! Exit codes: 0 success (or a valid key for `verify`), 1 the key was refused,
//! 2 usage, I/O or database error.
#![forbid(unsafe_code)]

mod copy;
mod import;
mod secrets;
mod serve;
mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use keyward::{
    Actor, Engine, ImportKey, KeyInfo, KeyUpdate, LimitSync, NewKey, NewSigning, NewTool, NewWorkspace, ToolUpdate,
    WorkspaceUpdate,
};
use keyward_core::ip::{IpRule, IpRules};
use keyward_core::limits::{Concurrency, Credits, RateLimit};
use keyward_core::permission::Permission;
use keyward_core::signature::NoncePolicy;
use keyward_core::{KeyHash, KeyId, Limits, Prefix, UnixMillis, WorkspaceId};
use keyward_http::wire;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "keyward", version, about = "Embedded API-key authentication: keys, limits, verification.")]
struct Cli {
    /// Database file [default: ./keyward.redb].
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,
    /// A shared store instead of the database file: `redis://HOST:PORT/DB`,
    /// `rediss://…` (TLS), `redis+cluster://H1:P1,H2:P2,…` (Redis Cluster)
    /// or `rediss+cluster://…`.
    #[arg(long, global = true, value_name = "URL", conflicts_with = "db")]
    store: Option<String>,
    /// A PEM CA certificate the TLS store's certificate must chain to,
    /// instead of the system's roots (`rediss://`; with `store copy`, for
    /// its Redis sides).
    #[arg(long, global = true, value_name = "PEM")]
    store_ca: Option<PathBuf>,
    /// With --store: the master and snapshot keys (JSON, as `<db>.secrets`);
    /// `init` creates it. `KEYWARD_MASTER_KEY` / `KEYWARD_SNAPSHOT_KEY` (hex)
    /// override it. A shared store never holds them. With `store copy`: those
    /// of its Redis side.
    #[arg(long, global = true, value_name = "FILE")]
    secrets: Option<PathBuf>,
    /// The most memory, in MiB, the database file's page cache may hold
    /// (redb's cache: pages read or written, kept for the next read; the
    /// engine's open reads every record without it). Not used with --store.
    /// [default: 1024]
    #[arg(long, global = true, value_name = "MIB")]
    cache_mb: Option<u64>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new database with a default workspace, the `gl_ping` tool and a root key.
    Init {
        /// Prefix of the workspace's keys.
        #[arg(long, default_value = "kw_live")]
        prefix: String,
    },
    /// Serve the HTTP API (creates the database on first run).
    Serve(serve::ServeArgs),
    /// Manage keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage tools.
    #[command(subcommand)]
    Tool(ToolCommand),
    /// Show or change the workspace.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Verify a key: exits 0 when valid, 1 when refused.
    Verify {
        /// The token.
        token: String,
        /// Client IP.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// Tool called.
        #[arg(long)]
        tool: Option<String>,
        /// Required permission (repeatable).
        #[arg(long = "permission")]
        permissions: Vec<String>,
    },
    /// Read the audit log.
    Audit {
        /// Events after this sequence number.
        #[arg(long, default_value_t = 0)]
        cursor: u64,
        /// Page size (1–100).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Snapshots for edge verifiers.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// The store itself.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy everything a store holds into an empty one: workspaces, tools,
    /// keys, counters, nonces, sessions and the audit log. Keys keep their
    /// tokens; the master and snapshot keys go where the destination's
    /// nodes read them (`<db>.secrets`, or the --secrets file of a Redis
    /// destination).
    Copy {
        /// The store to copy, only read: a redb file (not served meanwhile)
        /// or redis://HOST:PORT/DB.
        #[arg(long, value_name = "DB|URL")]
        from: String,
        /// The empty store to copy into: a redb file (created) or
        /// redis://HOST:PORT/DB.
        #[arg(long, value_name = "DB|URL")]
        to: String,
    },
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Write the authenticated snapshot to a file.
    Export {
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args, Default)]
struct KeySettings {
    /// Permission (repeatable), e.g. `keys:read` or `billing:*`.
    #[arg(long = "permission")]
    permissions: Vec<String>,
    /// Expiry, RFC 3339.
    #[arg(long)]
    expires_at: Option<String>,
    /// Allow only this CIDR (repeatable).
    #[arg(long = "ip-allow")]
    ip_allow: Vec<String>,
    /// Deny this CIDR (repeatable).
    #[arg(long = "ip-deny")]
    ip_deny: Vec<String>,
    /// Rate limit as LIMIT/WINDOW_MS, e.g. 100/60000.
    #[arg(long)]
    rate: Option<String>,
    /// Cooldown between calls, ms.
    #[arg(long)]
    cooldown_ms: Option<u64>,
    /// Calls per UTC day.
    #[arg(long)]
    daily: Option<u64>,
    /// Jobs in flight at most.
    #[arg(long)]
    concurrency: Option<u32>,
    /// Starting credits.
    #[arg(long)]
    credits: Option<u64>,
    /// Allowed tool (repeatable); none means all.
    #[arg(long = "tool")]
    tools: Vec<String>,
    /// Metadata, a JSON object.
    #[arg(long)]
    meta: Option<String>,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key; prints its token once.
    Create {
        /// Name, 1–128 characters.
        #[arg(long)]
        name: String,
        /// Create it already expired.
        #[arg(long)]
        expire_now: bool,
        /// Attach a signing identity with this user id.
        #[arg(long)]
        signing_user: Option<String>,
        /// Replay policy of the signing identity: monotonic or unique.
        #[arg(long, default_value = "monotonic")]
        nonce_policy: String,
        /// Let the signing key's token also authenticate alone (bearer,
        /// X-API-Key). By default a signing key only signs.
        #[arg(long, requires = "signing_user")]
        bearer: bool,
        #[command(flatten)]
        settings: KeySettings,
    },
    /// List keys, newest first.
    List {
        /// Page size (1–100).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Cursor from a previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one key.
    Show {
        /// Key id.
        id: String,
    },
    /// Change a key.
    Update {
        /// Key id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// Disable the key.
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Re-enable the key.
        #[arg(long)]
        enable: bool,
        /// Remove the expiry.
        #[arg(long, conflicts_with = "expires_at")]
        no_expiry: bool,
        #[command(flatten)]
        settings: KeySettings,
    },
    /// Revoke a key for good.
    Revoke {
        /// Key id.
        id: String,
    },
    /// New token now; the old one works for the grace period.
    Rotate {
        /// Key id.
        id: String,
        /// Seconds the old token keeps working.
        #[arg(long, default_value_t = 0)]
        grace_seconds: u64,
    },
    /// A key's calls by verdict code over time.
    Usage {
        /// Key id.
        id: String,
        /// Bucket width: minute (kept 48 h), hour (30 days) or day (400 days).
        #[arg(long, default_value = "hour", value_parser = parse_granularity)]
        granularity: keyward::Granularity,
        /// Start (RFC 3339 or Unix ms). By default an hour of minutes, a day
        /// of hours or 30 days of days before `--to`.
        #[arg(long, value_parser = parse_time)]
        from: Option<UnixMillis>,
        /// End, exclusive (RFC 3339 or Unix ms). By default now.
        #[arg(long, value_parser = parse_time)]
        to: Option<UnixMillis>,
    },
    /// Import a key issued elsewhere by the SHA-256 (hex) of its token, or
    /// many keys from a JSONL file (--file).
    ///
    /// With --file, each line is one key spec as `POST /v1/api-keys` takes
    /// it, plus `"token"` (a key issued elsewhere, by its token: only its
    /// SHA-256 is kept) or `"hash"` (by the SHA-256 hex of its token, with
    /// an optional display `"start"`); with neither, a new key is minted.
    /// The whole file is checked first (a bad line is named and nothing is
    /// written), then imported --batch keys per commit. Every key imported
    /// is printed to stdout as a JSON line {"line","id","name"}, with
    /// "secret" for a minted key (shown this once).
    Import {
        /// SHA-256 of the token, 64 hex characters.
        #[arg(long, required_unless_present = "file", conflicts_with = "file")]
        hash: Option<String>,
        /// Name.
        #[arg(long, required_unless_present = "file", conflicts_with = "file")]
        name: Option<String>,
        /// A JSONL file of key specs, one per line.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// With --file: keys per commit (1 to 10000).
        #[arg(long, default_value_t = 1_000, requires = "file",
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch: u32,
        #[command(flatten)]
        settings: KeySettings,
    },
}

#[derive(Subcommand)]
enum ToolCommand {
    /// Add a tool.
    Add {
        /// Name.
        name: String,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        settings: ToolSettings,
    },
    /// Change a tool.
    Update {
        /// Name.
        name: String,
        /// Enable it.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Disable it.
        #[arg(long)]
        disable: bool,
        /// Remove its upstream: the gateway then answers 501 for it.
        #[arg(long, conflicts_with = "upstream")]
        no_upstream: bool,
        #[command(flatten)]
        settings: ToolSettings,
    },
    /// List tools.
    List,
}

#[derive(Args)]
struct ToolSettings {
    /// Permission a key needs to call it.
    #[arg(long)]
    permission: Option<String>,
    /// Cooldown per key, ms.
    #[arg(long)]
    cooldown_ms: Option<u64>,
    /// Calls per key per UTC day.
    #[arg(long)]
    daily_limit: Option<u64>,
    /// Where the gateway forwards admitted calls (`http://` or `https://` URL).
    #[arg(long)]
    upstream: Option<String>,
    /// How long the gateway waits for the upstream, ms. By default 30000.
    #[arg(long)]
    timeout_ms: Option<u64>,
}

#[derive(Subcommand)]
enum WorkspaceCommand {
    /// Create another workspace with its own root key (printed once).
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// Prefix of its keys.
        #[arg(long, default_value = "kw_live")]
        prefix: String,
    },
    /// List workspaces.
    List,
    /// Show the workspace.
    Show,
    /// Change it.
    Update {
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// Plan API access: true or false.
        #[arg(long)]
        api_access: Option<bool>,
        /// Prefix of new keys.
        #[arg(long)]
        prefix: Option<String>,
        /// Allow only this CIDR (repeatable; replaces the rules).
        #[arg(long = "ip-allow")]
        ip_allow: Vec<String>,
        /// Deny this CIDR (repeatable; replaces the rules).
        #[arg(long = "ip-deny")]
        ip_deny: Vec<String>,
        /// How nodes sharing a store count limits: `exact`, or `local:MS`
        /// (each node counts alone and reconciles every MS milliseconds).
        #[arg(long, value_parser = parse_limit_sync)]
        limit_sync: Option<LimitSync>,
        /// Lifetime of keys created without an expiry (`30d`, `12h`, …;
        /// `none` clears it).
        #[arg(long, value_parser = parse_ttl)]
        default_key_ttl: Option<Ttl>,
        /// Longest lifetime of a key (`90d`, …; `none` clears it): a later
        /// expiry is refused.
        #[arg(long, value_parser = parse_ttl)]
        max_key_ttl: Option<Ttl>,
    },
}

/// `exact` or `local:MS`.
fn parse_limit_sync(s: &str) -> Result<LimitSync, String> {
    s.parse()
}

/// How a workspace's limits are counted, as shown.
fn limit_sync_text(sync: LimitSync) -> String {
    sync.to_string()
}

/// A key lifetime in milliseconds, or none.
#[derive(Clone, Copy, Debug)]
struct Ttl(Option<u64>);

/// A key lifetime: `30d`, `12h`, `90m`, `45s` or plain seconds; `none`
/// clears it.
fn parse_ttl(s: &str) -> Result<Ttl, String> {
    if s == "none" {
        return Ok(Ttl(None));
    }
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let size: u64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{s}`: expected a number with s, m, h or d (such as 30d), or none")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(size))
        .map(|ms| Ttl(Some(ms)))
        .ok_or_else(|| format!("`{s}`: expected a number with s, m, h or d (such as 30d), or none"))
}

/// A key lifetime as shown: seconds, or `-`.
fn ttl_text(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".into(), |ms| format!("{}s", ms / 1000))
}

/// A failure with its exit code.
#[derive(Debug)]
pub(crate) struct Fail(pub u8, pub String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(2, e.to_string())
    }
}

type Out = Result<u8, Fail>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(Fail(code, msg)) => {
            eprintln!("keyward: error: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> Out {
    let json = cli.json;
    match cli.command {
        // It names its two stores itself.
        Command::Store(StoreCommand::Copy { from, to }) => {
            if cli.db.is_some() || cli.store.is_some() {
                return Err(Fail(2, "store copy: name the stores with --from and --to, not --db or --store".into()));
            }
            let ca = read_ca(cli.store_ca.as_deref())?;
            copy::run(&from, &to, cli.secrets.as_deref(), ca, json)
        }
        command => {
            if cli.secrets.is_some() && cli.store.is_none() {
                return Err(Fail(2, "--secrets goes with --store (or `store copy`)".into()));
            }
            if cli.store_ca.is_some() && cli.store.is_none() {
                return Err(Fail(2, "--store-ca goes with --store (or `store copy`)".into()));
            }
            let db = cli.db.unwrap_or_else(|| PathBuf::from("./keyward.redb"));
            let ca = read_ca(cli.store_ca.as_deref())?;
            on_place(&Place::new(db, cli.cache_mb, cli.store, cli.secrets, ca)?, command, json)
        }
    }
}

/// Runs a command on the store of `--db` or `--store`.
fn on_place(db: &Place, command: Command, json: bool) -> Out {
    match command {
        Command::Init { prefix } => init(db, &prefix, json),
        Command::Serve(args) => serve::run(db, args),
        Command::Key(cmd) => key(db, cmd, json),
        Command::Tool(cmd) => tool(db, cmd, json),
        Command::Workspace(cmd) => workspace(db, cmd, json),
        Command::Verify { token, ip, tool, permissions } => {
            let engine = open(db)?;
            let perms: Vec<&str> = permissions.iter().map(String::as_str).collect();
            let req = keyward::Request { ip, tool: tool.as_deref(), permissions: &perms, ..Default::default() };
            let out = engine.verify_with(&token, &req, &keyward::Checks::default());
            let v = &out.verdict;
            // A check from the command line is not a job: a concurrency
            // lease it took would otherwise hold a slot until its TTL.
            if let Some(id) = v.key_id
                && !v.leases.is_empty()
            {
                engine.release(id, tool.as_deref(), &v.leases);
            }
            engine.close()?;
            if json {
                print_json(&keyward_http::verify_view(&out, None))?;
            } else {
                println!("{}", v.code);
            }
            Ok(if v.is_valid() { 0 } else { 1 })
        }
        Command::Audit { cursor, limit } => {
            let engine = open(db)?;
            let page = engine.audit(None, cursor, limit)?;
            if json {
                let items = page.items.iter().map(keyward_http::audit_view).collect();
                print_json(&wire::AuditPage { items, next_cursor: page.next_cursor })?;
            } else {
                let rows: Vec<Vec<String>> = page
                    .items
                    .iter()
                    .map(|e| {
                        vec![
                            e.seq.to_string(),
                            e.at.to_rfc3339(),
                            e.actor.clone(),
                            e.action.as_str().into(),
                            e.target.clone(),
                            e.detail.clone(),
                        ]
                    })
                    .collect();
                table::print(&["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "DETAIL"], &rows);
            }
            Ok(0)
        }
        Command::Snapshot(SnapshotCommand::Export { out }) => {
            let engine = open(db)?;
            let bytes = engine.export_snapshot()?;
            std::fs::write(&out, &bytes).map_err(|e| Fail(2, format!("{}: {e}", out.display())))?;
            if json {
                println!(
                    "{}",
                    json!({"path": out.display().to_string(), "bytes": bytes.len(), "keys": engine.key_count()})
                );
            } else {
                println!("wrote {} ({} bytes, {} keys)", out.display(), bytes.len(), engine.key_count());
            }
            Ok(0)
        }
        Command::Store(StoreCommand::Copy { .. }) => {
            Err(Fail(2, "store copy: name the stores with --from and --to, not --db or --store".into()))
        }
    }
}

/// Where the data lives: the redb file of `--db` (the default), or the
/// shared store of `--store`.
pub(crate) enum Place {
    /// A redb file, with its page cache's size in MiB (`None`: the engine's default).
    File(PathBuf, Option<u64>),
    Redis {
        url: String,
        secrets: Option<PathBuf>,
        ca: Option<Vec<u8>>,
    },
}

/// What `--store` takes.
pub(crate) const STORE_URL: &str = "a redis://, rediss://, redis+cluster:// or rediss+cluster:// URL";

/// The CA certificate of `--store-ca`, read.
fn read_ca(path: Option<&Path>) -> Result<Option<Vec<u8>>, Fail> {
    path.map(|p| std::fs::read(p).map_err(|e| Fail(2, format!("--store-ca: {}: {e}", p.display())))).transpose()
}

impl Place {
    fn new(
        db: PathBuf,
        cache_mb: Option<u64>,
        store: Option<String>,
        secrets: Option<PathBuf>,
        ca: Option<Vec<u8>>,
    ) -> Result<Self, Fail> {
        let Some(url) = store else { return Ok(Place::File(db, cache_mb)) };
        if cache_mb.is_some() {
            return Err(Fail(2, "--cache-mb sizes the database file's cache; it does not go with --store".into()));
        }
        Ok(Place::Redis { url: redis_url("--store", url, STORE_URL)?, secrets, ca })
    }

    /// Whether a database file is there already (a store always is).
    pub(crate) fn exists(&self) -> bool {
        match self {
            Place::File(p, _) => p.exists(),
            Place::Redis { .. } => true,
        }
    }
}

/// The URL `flag` gave, if it names a store this build supports (`expected`
/// says what `flag` takes, for the message).
pub(crate) fn redis_url(flag: &str, url: String, expected: &str) -> Result<String, Fail> {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("redis" | "rediss" | "redis+cluster" | "rediss+cluster") => Ok(url),
        _ => Err(Fail(2, format!("{flag}: expected {expected}"))),
    }
}

/// Opens an existing database with its secrets.
pub(crate) fn open(db: &Place) -> Result<Engine, Fail> {
    if let Place::File(path, _) = db
        && !path.exists()
    {
        return Err(Fail(
            2,
            format!("{} does not exist; run `keyward init --db {}` first", path.display(), path.display()),
        ));
    }
    let engine = connect(db, std::time::Duration::from_secs(1), false, &|b| b)?;
    if matches!(db, Place::Redis { .. }) && engine.workspaces().is_empty() {
        return Err(Fail(
            2,
            format!("{} holds no keyward data; run `keyward init --store …` first", engine.path().display()),
        ));
    }
    Ok(engine)
}

/// Opens the engine, creating the database (or a missing `--secrets` file)
/// if needed; `tune` sets further engine options.
pub(crate) fn open_or_create(
    db: &Place,
    flush: std::time::Duration,
    tune: &dyn Fn(keyward::EngineBuilder) -> keyward::EngineBuilder,
) -> Result<Engine, Fail> {
    connect(db, flush, true, tune)
}

/// Opens the engine; `create` lets `init` write a missing `--secrets` file.
fn connect(
    db: &Place,
    flush: std::time::Duration,
    create: bool,
    tune: &dyn Fn(keyward::EngineBuilder) -> keyward::EngineBuilder,
) -> Result<Engine, Fail> {
    let s = match db {
        Place::File(path, _) => secrets::load_or_create(path)?,
        Place::Redis { secrets, .. } => secrets::for_store(secrets.as_deref(), create)?,
    };
    let mut b = tune(Engine::builder().flush_interval(flush));
    if let Some(m) = s.master_key {
        b = b.master_key(m);
    }
    if let Some(k) = s.snapshot_key {
        b = b.snapshot_key(k);
    }
    match db {
        Place::File(path, None) => b.open(path),
        Place::File(path, Some(mb)) => b.cache_mb(*mb).open(path),
        Place::Redis { url, ca, .. } => match ca {
            Some(ca) => b.store_ca(ca.as_slice()).open_redis(url),
            None => b.open_redis(url),
        },
    }
    .map_err(|e| Fail(2, e.to_string()))
}

/// What `init` creates.
pub(crate) struct Initialised {
    pub workspace: WorkspaceId,
    pub root_key: String,
}

/// Creates the default workspace, `gl_ping` and the root key in an empty database.
pub(crate) fn initialise(engine: &Engine, prefix: &str) -> Result<Initialised, Fail> {
    if !engine.workspaces().is_empty() {
        return Err(Fail(2, format!("{} is already initialised", engine.path().display())));
    }
    provision(engine, "default", prefix, &Actor::System)
}

/// Creates a workspace with the `gl_ping` tool and a root key (permission `*`).
fn provision(engine: &Engine, name: &str, prefix: &str, actor: &Actor) -> Result<Initialised, Fail> {
    let prefix = Prefix::parse(prefix).map_err(|e| Fail(2, format!("--prefix: {e}")))?;
    let ws = engine.create_workspace(NewWorkspace { prefix, ..NewWorkspace::named(name) }, actor)?;
    let id = ws.policy.id;
    engine.create_tool(
        id,
        NewTool {
            name: "gl_ping".into(),
            enabled: true,
            permission: None,
            cooldown_ms: None,
            daily_limit: None,
            upstream: None,
            timeout_ms: None,
        },
        actor,
    )?;
    let root = engine.create_key(
        id,
        NewKey { name: "root".into(), permissions: vec![Permission::parse("*")?], ..NewKey::default() },
        actor,
    )?;
    Ok(Initialised { workspace: id, root_key: root.token.expose().to_owned() })
}

fn init(db: &Place, prefix: &str, json: bool) -> Out {
    if let Place::File(path, _) = db
        && path.exists()
    {
        return Err(Fail(2, format!("{} already exists", path.display())));
    }
    // Validate before creating any file.
    Prefix::parse(prefix).map_err(|e| Fail(2, format!("--prefix: {e}")))?;
    let engine = open_or_create(db, std::time::Duration::from_secs(1), &|b| b)?;
    let init = initialise(&engine, prefix)?;
    engine.close()?;
    if json {
        println!("{}", json!({"workspace_id": init.workspace.to_string(), "root_key": init.root_key}));
    } else {
        println!("initialised {}", engine.path().display());
        println!("workspace  {}", init.workspace);
        println!("ROOT KEY (shown once, store it now): {}", init.root_key);
    }
    Ok(0)
}

fn default_workspace(engine: &Engine) -> Result<WorkspaceId, Fail> {
    engine
        .workspaces()
        .first()
        .map(|w| w.policy.id)
        .ok_or_else(|| Fail(2, "database has no workspace; run `keyward init`".into()))
}

fn parse_id(id: &str) -> Result<KeyId, Fail> {
    KeyId::parse(id).map_err(|e| Fail(2, format!("{id}: {e}")))
}

fn ip_rules(allow: &[String], deny: &[String]) -> Result<Option<IpRules>, Fail> {
    if allow.is_empty() && deny.is_empty() {
        return Ok(None);
    }
    let mut rules = Vec::new();
    for c in allow {
        rules.push(IpRule::parse("allow", c)?);
    }
    for c in deny {
        rules.push(IpRule::parse("deny", c)?);
    }
    Ok(Some(IpRules(rules)))
}

fn limits(s: &KeySettings) -> Result<Option<Limits>, Fail> {
    let mut l = Limits::default();
    if let Some(r) = &s.rate {
        let (n, w) = r.split_once('/').ok_or_else(|| Fail(2, "--rate must be LIMIT/WINDOW_MS".into()))?;
        l.rates.push(RateLimit { name: "default".into(), limit: n.parse()?, window_ms: w.parse()?, auto_apply: true });
    }
    l.cooldown_ms = s.cooldown_ms;
    l.daily = s.daily;
    l.concurrency = s.concurrency.map(|max| Concurrency { max, lease_ms: keyward_http::DEFAULT_LEASE_MS });
    l.credits = s.credits.map(|initial| Credits { initial, refill: None });
    l.validate()?;
    Ok(if l.is_empty() { None } else { Some(l) })
}

fn permissions(list: &[String]) -> Result<Vec<Permission>, Fail> {
    list.iter().map(|p| Permission::parse(p).map_err(|e| Fail(2, format!("--permission {p}: {e}")))).collect()
}

fn meta(text: &Option<String>) -> Result<Option<Value>, Fail> {
    match text {
        None => Ok(None),
        Some(t) => serde_json::from_str(t).map(Some).map_err(|e| Fail(2, format!("--meta: {e}"))),
    }
}

fn expiry(text: &Option<String>) -> Result<Option<UnixMillis>, Fail> {
    match text {
        None => Ok(None),
        Some(t) => UnixMillis::parse_rfc3339(t)
            .map(Some)
            .ok_or_else(|| Fail(2, format!("--expires-at {t}: not an RFC 3339 time"))),
    }
}

/// `value` as one line of JSON, as the HTTP API sends it.
fn print_json(value: &impl serde::Serialize) -> Result<(), Fail> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

fn key_row(k: &KeyInfo) -> Vec<String> {
    vec![
        k.id.to_string(),
        k.name.clone(),
        k.start.clone(),
        k.status.as_str().into(),
        k.created_at.to_rfc3339(),
        k.last_used_at.map_or_else(|| "-".into(), UnixMillis::to_rfc3339),
        k.permissions.iter().map(Permission::as_str).collect::<Vec<_>>().join(","),
    ]
}

const KEY_HEADERS: [&str; 7] = ["ID", "NAME", "START", "STATUS", "CREATED", "LAST USED", "PERMISSIONS"];

/// A key: as `GET /v1/api-keys/{id}` answers with `--json`, else a table row.
fn show_key(k: &KeyInfo, json: bool) -> Result<(), Fail> {
    if json {
        print_json(&keyward_http::key_view(k))
    } else {
        table::print(&KEY_HEADERS, &[key_row(k)]);
        Ok(())
    }
}

/// Secrets shown once, below a key's table row.
fn show_secrets(secrets: &[(&str, String)]) {
    for (name, value) in secrets {
        println!("{name}: {value}");
    }
}

/// The secrets of a key just created (its token, and a signing key's).
fn created_secrets(created: &keyward::CreatedKey) -> Vec<(&'static str, String)> {
    let mut secrets = vec![("secret", created.token.expose().to_owned())];
    if let Some(s) = &created.signing {
        secrets.push(("api_secret", s.api_secret.as_str().to_owned()));
        secrets.push(("user_id", s.user_id.clone()));
        secrets.push(("nonce", s.nonce.to_string()));
    }
    secrets
}

impl KeySettings {
    /// Whether no setting was given.
    fn is_empty(&self) -> bool {
        let KeySettings {
            permissions,
            expires_at,
            ip_allow,
            ip_deny,
            rate,
            cooldown_ms,
            daily,
            concurrency,
            credits,
            tools,
            meta,
        } = self;
        permissions.is_empty()
            && ip_allow.is_empty()
            && ip_deny.is_empty()
            && tools.is_empty()
            && expires_at.is_none()
            && rate.is_none()
            && cooldown_ms.is_none()
            && daily.is_none()
            && concurrency.is_none()
            && credits.is_none()
            && meta.is_none()
    }
}

/// A key named `name` with the settings `key create` and `key import` share.
fn new_key(name: String, settings: &KeySettings) -> Result<NewKey, Fail> {
    Ok(NewKey {
        name,
        expires_at: expiry(&settings.expires_at)?,
        permissions: permissions(&settings.permissions)?,
        ip_rules: ip_rules(&settings.ip_allow, &settings.ip_deny)?.unwrap_or_default(),
        limits: limits(settings)?,
        tools: settings.tools.clone(),
        meta: meta(&settings.meta)?,
        ..NewKey::default()
    })
}

fn key(db: &Place, cmd: KeyCommand, json: bool) -> Out {
    let engine = open(db)?;
    let ws = default_workspace(&engine)?;
    let admin = Actor::Admin;
    match cmd {
        KeyCommand::Create { name, expire_now, signing_user, nonce_policy, bearer, settings } => {
            let nonce_policy = match nonce_policy.as_str() {
                "monotonic" => NoncePolicy::Monotonic,
                "unique" => NoncePolicy::UNIQUE_DEFAULT,
                other => return Err(Fail(2, format!("--nonce-policy {other}: use monotonic or unique"))),
            };
            let spec = NewKey {
                expire_now,
                signing: signing_user.map(|user_id| NewSigning { user_id, nonce_policy }),
                bearer,
                ..new_key(name, &settings)?
            };
            let created = engine.create_key(ws, spec, &admin)?;
            if json {
                print_json(&keyward_http::created_key_view(
                    &created.info,
                    Some(&created.token),
                    created.signing.as_ref(),
                ))?;
            } else {
                show_key(&created.info, false)?;
                show_secrets(&created_secrets(&created));
            }
        }
        KeyCommand::List { limit, cursor } => {
            let page = engine.list_keys(ws, limit, cursor.as_deref())?;
            if json {
                let items = page.items.iter().map(keyward_http::key_view).collect();
                print_json(&wire::KeyPage { items, next_cursor: page.next_cursor })?;
            } else {
                table::print(&KEY_HEADERS, &page.items.iter().map(key_row).collect::<Vec<_>>());
                if let Some(c) = page.next_cursor {
                    println!("next page: --cursor {c}");
                }
            }
        }
        KeyCommand::Show { id } => show_key(&engine.key(parse_id(&id)?)?, json)?,
        KeyCommand::Update { id, name, disable, enable, no_expiry, settings } => {
            let update = KeyUpdate {
                name,
                expires_at: if no_expiry { Some(None) } else { expiry(&settings.expires_at)?.map(Some) },
                permissions: if settings.permissions.is_empty() {
                    None
                } else {
                    Some(permissions(&settings.permissions)?)
                },
                ip_rules: ip_rules(&settings.ip_allow, &settings.ip_deny)?,
                limits: limits(&settings)?,
                tools: if settings.tools.is_empty() { None } else { Some(settings.tools.clone()) },
                meta: meta(&settings.meta)?.map(Some),
                disabled: if disable {
                    Some(true)
                } else if enable {
                    Some(false)
                } else {
                    None
                },
                ..KeyUpdate::default()
            };
            show_key(&engine.update_key(parse_id(&id)?, update, &admin)?, json)?;
        }
        KeyCommand::Revoke { id } => show_key(&engine.revoke_key(parse_id(&id)?, &admin)?, json)?,
        KeyCommand::Rotate { id, grace_seconds } => {
            let old = parse_id(&id)?;
            let created = engine.rotate_key(old, grace_seconds.saturating_mul(1000), &admin)?;
            if json {
                print_json(&keyward_http::rotated_key_view(&created, old))?;
            } else {
                show_key(&created.info, false)?;
                let mut secrets = created_secrets(&created);
                secrets.insert(1, ("rotated_from", old.to_string()));
                show_secrets(&secrets);
            }
        }
        KeyCommand::Usage { id, granularity: g, from, to } => {
            let to = to.unwrap_or_else(|| g.default_range(engine.now()).1);
            let from = from.unwrap_or_else(|| g.default_range(UnixMillis(to.get().saturating_sub(1))).0);
            let buckets = engine.key_history(parse_id(&id)?, g, from, to)?;
            show_history(g, from, to, &buckets, json);
        }
        KeyCommand::Import { file: Some(file), batch, settings, .. } => {
            if !settings.is_empty() {
                return Err(Fail(2, "--file: each key's settings come from its line, not from flags".into()));
            }
            // Invariant: clap keeps --batch within 1..=10000.
            let batch = usize::try_from(batch).unwrap_or(1_000);
            import::run(&engine, ws, &file, batch, json)?;
        }
        KeyCommand::Import { hash, name, settings, .. } => {
            let (Some(hash), Some(name)) = (hash, name) else {
                return Err(Fail(2, "key import: give --hash and --name, or --file".into()));
            };
            let hash = KeyHash::from_hex(&hash).ok_or_else(|| Fail(2, "--hash must be 64 hex characters".into()))?;
            let spec = new_key(name, &settings)?;
            show_key(&engine.import_key(ws, ImportKey { hash: Some(hash), key: spec, start: None }, &admin)?, json)?;
        }
    }
    engine.close()?;
    Ok(0)
}

/// `minute`, `hour` or `day`.
fn parse_granularity(s: &str) -> Result<keyward::Granularity, String> {
    keyward::Granularity::parse(s).ok_or_else(|| "expected minute, hour or day".into())
}

/// RFC 3339 or Unix milliseconds.
fn parse_time(s: &str) -> Result<UnixMillis, String> {
    UnixMillis::parse_rfc3339(s)
        .or_else(|| s.parse().ok().map(UnixMillis))
        .ok_or_else(|| format!("`{s}` is neither an RFC 3339 time nor Unix milliseconds"))
}

/// A usage history: as the HTTP API answers it with `--json`, else a table
/// with a column per verdict code seen.
fn show_history(
    g: keyward::Granularity,
    from: UnixMillis,
    to: UnixMillis,
    buckets: &[keyward::HistoryBucket],
    json: bool,
) {
    if json {
        println!("{}", keyward_http::history_json(g, from, to, buckets));
        return;
    }
    let codes: Vec<keyward_core::Code> = keyward_core::Code::ALL
        .into_iter()
        .filter(|c| buckets.iter().any(|b| b.counts.iter().any(|(x, _)| x == c)))
        .collect();
    let mut header = vec!["START"];
    header.extend(codes.iter().map(|c| c.as_str()));
    let rows: Vec<Vec<String>> = buckets
        .iter()
        .map(|b| {
            let mut row = vec![b.start.to_rfc3339()];
            for c in &codes {
                row.push(b.counts.iter().find(|(x, _)| x == c).map_or(0, |(_, n)| *n).to_string());
            }
            row
        })
        .collect();
    table::print(&header, &rows);
}

fn tool_row(tool: &keyward::Tool) -> Vec<String> {
    let t = &tool.policy;
    let opt = |v: Option<u64>| v.map_or_else(|| "-".into(), |n| n.to_string());
    vec![
        t.name.clone(),
        t.enabled.to_string(),
        t.permission.as_ref().map_or_else(|| "-".into(), |p| p.to_string()),
        opt(t.limits.cooldown_ms),
        opt(t.limits.daily),
        tool.upstream.clone().unwrap_or_else(|| "-".into()),
        tool.timeout_ms.to_string(),
    ]
}

const TOOL_HEADERS: [&str; 7] =
    ["NAME", "ENABLED", "PERMISSION", "COOLDOWN MS", "DAILY LIMIT", "UPSTREAM", "TIMEOUT MS"];

fn tool(db: &Place, cmd: ToolCommand, json: bool) -> Out {
    let engine = open(db)?;
    let ws = default_workspace(&engine)?;
    let perm = |p: Option<String>| p.map(|p| Permission::parse(&p)).transpose();
    // A tool added or changed is shown as the API answers it, a list as a list.
    let (shown, one) = match cmd {
        ToolCommand::Add {
            name,
            disabled,
            settings: ToolSettings { permission, cooldown_ms, daily_limit, upstream, timeout_ms },
        } => {
            let spec = NewTool {
                name,
                enabled: !disabled,
                permission: perm(permission)?,
                cooldown_ms,
                daily_limit,
                upstream,
                timeout_ms,
            };
            (vec![engine.create_tool(ws, spec, &Actor::Admin)?], true)
        }
        ToolCommand::Update {
            name,
            enable,
            disable,
            no_upstream,
            settings: ToolSettings { permission, cooldown_ms, daily_limit, upstream, timeout_ms },
        } => {
            let update = ToolUpdate {
                enabled: if enable {
                    Some(true)
                } else if disable {
                    Some(false)
                } else {
                    None
                },
                permission: perm(permission)?.map(Some),
                cooldown_ms: cooldown_ms.map(Some),
                daily_limit: daily_limit.map(Some),
                upstream: if no_upstream { Some(None) } else { upstream.map(Some) },
                timeout_ms: timeout_ms.map(Some),
            };
            (vec![engine.update_tool(ws, &name, update, &Actor::Admin)?], true)
        }
        ToolCommand::List => (engine.tools(ws)?, false),
    };
    if json {
        match (one, shown.first()) {
            (true, Some(t)) => print_json(&keyward_http::tool_view(t))?,
            _ => print_json(&wire::ToolList { items: shown.iter().map(keyward_http::tool_view).collect() })?,
        }
    } else {
        table::print(&TOOL_HEADERS, &shown.iter().map(tool_row).collect::<Vec<_>>());
    }
    engine.close()?;
    Ok(0)
}

fn workspace(db: &Place, cmd: WorkspaceCommand, json: bool) -> Out {
    let engine = open(db)?;
    if let WorkspaceCommand::Create { name, prefix } = &cmd {
        let made = provision(&engine, name, prefix, &Actor::Admin)?;
        let (id, root) = (made.workspace, made.root_key);
        if json {
            println!("{}", json!({"workspace_id": id.to_string(), "root_key": root}));
        } else {
            println!("workspace  {id}");
            println!("ROOT KEY (shown once, store it now): {root}");
        }
        engine.close()?;
        return Ok(0);
    }
    if let WorkspaceCommand::List = cmd {
        let all = engine.workspaces();
        if json {
            let items: Vec<wire::Workspace> = all.iter().map(keyward_http::workspace_view).collect();
            print_json(&json!({ "items": items }))?;
        } else {
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|w| {
                    vec![
                        w.policy.id.to_string(),
                        w.policy.name.clone(),
                        w.policy.api_access.to_string(),
                        w.policy.prefix.to_string(),
                    ]
                })
                .collect();
            table::print(&["ID", "NAME", "API ACCESS", "PREFIX"], &rows);
        }
        engine.close()?;
        return Ok(0);
    }
    let ws = default_workspace(&engine)?;
    let w = match cmd {
        WorkspaceCommand::Create { .. } | WorkspaceCommand::List => return Ok(0),
        WorkspaceCommand::Show => engine.workspace(ws)?,
        WorkspaceCommand::Update {
            name,
            api_access,
            prefix,
            ip_allow,
            ip_deny,
            limit_sync,
            default_key_ttl,
            max_key_ttl,
        } => {
            let update = WorkspaceUpdate {
                name,
                api_access,
                prefix: prefix.map(|p| Prefix::parse(&p)).transpose()?,
                ip_rules: ip_rules(&ip_allow, &ip_deny)?,
                default_limits: None,
                limit_sync,
                default_key_ttl_ms: default_key_ttl.map(|t| t.0),
                max_key_ttl_ms: max_key_ttl.map(|t| t.0),
            };
            engine.update_workspace(ws, update, &Actor::Admin)?
        }
    };
    let p = &w.policy;
    if json {
        print_json(&keyward_http::workspace_view(&w))?;
    } else {
        let rules = p.ip_rules.0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        table::print(
            &["ID", "NAME", "API ACCESS", "PREFIX", "IP RULES", "LIMIT SYNC", "DEFAULT KEY TTL", "MAX KEY TTL"],
            &[vec![
                p.id.to_string(),
                p.name.clone(),
                p.api_access.to_string(),
                p.prefix.to_string(),
                if rules.is_empty() { "-".into() } else { rules },
                limit_sync_text(w.limit_sync),
                ttl_text(w.key_ttl.default_ms),
                ttl_text(w.key_ttl.max_ms),
            ]],
        );
    }
    engine.close()?;
    Ok(0)
}
