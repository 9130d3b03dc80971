//! The master key (signing identities) and snapshot key of a database, kept
//! beside it in `<db>.secrets` (mode 0600), or given by environment variables.

use std::path::{Path, PathBuf};

use crate::Fail;

/// The keys an engine is opened with.
#[derive(PartialEq, Eq)]
pub(crate) struct Secrets {
    pub master_key: Option<Vec<u8>>,
    pub snapshot_key: Option<Vec<u8>>,
}

/// Where the database file `db` keeps its keys: `<db>.secrets`.
pub(crate) fn path_for(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".secrets");
    PathBuf::from(p)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let t = text.trim();
    if !t.len().is_multiple_of(2) || t.len() < 32 {
        return None;
    }
    (0..t.len()).step_by(2).map(|i| u8::from_str_radix(t.get(i..i + 2)?, 16).ok()).collect()
}

fn env_key(name: &str) -> Result<Option<Vec<u8>>, Fail> {
    match std::env::var(name) {
        Ok(v) => unhex(&v).map(Some).ok_or_else(|| Fail(2, format!("{name} must be at least 16 bytes of hex"))),
        Err(_) => Ok(None),
    }
}

/// Reads `<db>.secrets`; creates it with fresh random keys when the database
/// itself does not exist yet. `KEYWARD_MASTER_KEY` / `KEYWARD_SNAPSHOT_KEY`
/// (hex) override the file.
pub(crate) fn load_or_create(db: &Path) -> Result<Secrets, Fail> {
    let path = path_for(db);
    let s = if path.exists() {
        read(&path)?
    } else if !db.exists() {
        create(&path)?
    } else {
        Secrets { master_key: None, snapshot_key: None }
    };
    with_env(s)
}

/// The keys a database file is opened with (`<db>.secrets`, then the
/// environment's), creating nothing.
pub(crate) fn beside(db: &Path) -> Result<Secrets, Fail> {
    let path = path_for(db);
    let s = if path.exists() { read(&path)? } else { Secrets { master_key: None, snapshot_key: None } };
    with_env(s)
}

/// Whether the environment gives both keys (so every node can take them
/// from there).
pub(crate) fn both_in_env() -> Result<bool, Fail> {
    Ok(env_key("KEYWARD_MASTER_KEY")?.is_some() && env_key("KEYWARD_SNAPSHOT_KEY")?.is_some())
}

/// The keys of a node of a shared store, which never holds them: from
/// `KEYWARD_MASTER_KEY` / `KEYWARD_SNAPSHOT_KEY` (hex) or the `--secrets`
/// file (created with fresh keys when `create` and it does not exist yet).
/// Both keys are required.
pub(crate) fn for_store(file: Option<&Path>, create_missing: bool) -> Result<Secrets, Fail> {
    let s = match file {
        Some(path) if path.exists() => read(path)?,
        Some(path) if create_missing => create(path)?,
        Some(path) => return Err(Fail(2, format!("--secrets {}: no such file", path.display()))),
        None => Secrets { master_key: None, snapshot_key: None },
    };
    let s = with_env(s)?;
    if s.master_key.is_none() || s.snapshot_key.is_none() {
        return Err(Fail(
            2,
            "a shared store never holds the master and snapshot keys: set KEYWARD_MASTER_KEY and \
             KEYWARD_SNAPSHOT_KEY (hex, as every node must) or pass --secrets FILE"
                .into(),
        ));
    }
    Ok(s)
}

/// Reads a secrets file (`{"master_key": hex, "snapshot_key": hex}`).
pub(crate) fn read(path: &Path) -> Result<Secrets, Fail> {
    refuse_wide_mode(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| Fail(2, format!("{}: {e}", path.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Fail(2, format!("{}: {e}", path.display())))?;
    let field = |name: &str| -> Result<Option<Vec<u8>>, Fail> {
        match v.get(name).and_then(|x| x.as_str()) {
            Some(h) => unhex(h).map(Some).ok_or_else(|| Fail(2, format!("{}: bad {name}", path.display()))),
            None => Ok(None),
        }
    };
    Ok(Secrets { master_key: field("master_key")?, snapshot_key: field("snapshot_key")? })
}

/// Writes a secrets file with fresh random keys (mode 0600).
fn create(path: &Path) -> Result<Secrets, Fail> {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut master = vec![0u8; 32];
    let mut snap = vec![0u8; 32];
    rng.fill_bytes(&mut master);
    rng.fill_bytes(&mut snap);
    let body = serde_json::json!({"master_key": hex(&master), "snapshot_key": hex(&snap)}).to_string();
    write_private(path, body.as_bytes())?;
    Ok(Secrets { master_key: Some(master), snapshot_key: Some(snap) })
}

/// Writes `keys` to a new secrets file (mode 0600), leaving out a key that
/// is absent.
pub(crate) fn write(path: &Path, keys: &Secrets) -> Result<(), Fail> {
    let mut body = serde_json::Map::new();
    for (name, key) in [("master_key", &keys.master_key), ("snapshot_key", &keys.snapshot_key)] {
        if let Some(k) = key {
            body.insert(name.into(), hex(k).into());
        }
    }
    write_private(path, serde_json::Value::Object(body).to_string().as_bytes())
}

/// The environment's keys over the file's.
fn with_env(mut s: Secrets) -> Result<Secrets, Fail> {
    if let Some(k) = env_key("KEYWARD_MASTER_KEY")? {
        s.master_key = Some(k);
    }
    if let Some(k) = env_key("KEYWARD_SNAPSHOT_KEY")? {
        s.snapshot_key = Some(k);
    }
    Ok(s)
}

/// Refuses a secrets file other users may read or change: the keys in it
/// sign sessions and snapshots.
#[cfg(unix)]
fn refuse_wide_mode(path: &Path) -> Result<(), Fail> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| Fail(2, format!("{}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Fail(
            2,
            format!(
                "{p}: mode {mode:04o} lets other users read or change the keys; run `chmod 600 {p}`",
                p = path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_wide_mode(_: &Path) -> Result<(), Fail> {
    Ok(())
}

/// Writes a new file with mode 0600, durably: the bytes go to `<path>.tmp`
/// and are synced, the file is linked in at `path` (which must not exist:
/// a crash leaves either no file or the whole one), and the directory is
/// synced so the new name survives a power cut.
#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Fail> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |p: &Path, e: std::io::Error| Fail(2, format!("{}: {e}", p.display()));
    if path.exists() {
        return Err(Fail(2, format!("{}: already exists", path.display())));
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover of a write that crashed before its link: never the keys in use.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(&tmp, e)),
        _ => {}
    }
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(|e| fail(&tmp, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| fail(&tmp, e))?;
    drop(f);
    let linked = std::fs::hard_link(&tmp, path).map_err(|e| fail(path, e));
    let _ = std::fs::remove_file(&tmp);
    linked?;
    sync_dir(path)
}

/// Syncs the directory holding `path`, so a new entry in it is durable.
#[cfg(unix)]
fn sync_dir(path: &Path) -> Result<(), Fail> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Fail(2, format!("{}: {e}", dir.display())))
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Fail> {
    std::fs::write(path, bytes).map_err(|e| Fail(2, format!("{}: {e}", path.display())))
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_files_are_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.redb.secrets");
        // A crashed write's leftover does not stop the next one.
        std::fs::write(dir.path().join("k.redb.secrets.tmp"), b"partial").unwrap();
        let made = create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!dir.path().join("k.redb.secrets.tmp").exists());
        let read_back = read(&path).unwrap();
        assert!(read_back == made);
        assert_eq!(read_back.master_key.as_ref().map(Vec::len), Some(32));
        // Never over an existing file.
        let Err(Fail(code, why)) = create(&path) else { panic!("overwrote the secrets file") };
        assert_eq!((code, why), (2, format!("{}: already exists", path.display())));
        assert!(read(&path).unwrap() == made);
    }

    #[test]
    fn a_file_others_may_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.redb.secrets");
        create(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let Err(Fail(code, why)) = read(&path) else { panic!("mode {mode:o} accepted") };
            assert_eq!(code, 2);
            let p = path.display();
            assert_eq!(
                why,
                format!("{p}: mode {mode:04o} lets other users read or change the keys; run `chmod 600 {p}`")
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(read(&path).is_ok(), "mode {mode:o} refused");
        }
    }
}
