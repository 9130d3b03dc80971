//! Shared set-up for the engine's integration tests.
#![allow(dead_code)]

use keyward::{Actor, Engine, ManualClock, NewKey, NewWorkspace, Workspace};
use keyward_core::{UnixMillis, WorkspaceId};
use tempfile::TempDir;

/// 2024-03-01T10:00:00Z.
pub const T0: UnixMillis = UnixMillis(1_709_287_200_000);
pub const MASTER: &[u8] = b"master-key-for-tests-0123456789abcdef";
pub const SNAP: &[u8] = b"snapshot-key-for-tests-0123456789";

pub struct Env {
    pub dir: TempDir,
    pub clock: ManualClock,
    pub engine: Engine,
    pub ws: WorkspaceId,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let engine = open(&dir, &clock);
        let ws = engine.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
        Self { dir, clock, engine, ws }
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("keyward.redb")
    }

    /// Closes the engine and opens the same file again.
    pub fn reopen(self) -> Self {
        let Env { dir, clock, engine, ws } = self;
        engine.close().unwrap();
        drop(engine);
        let engine = open(&dir, &clock);
        Env { dir, clock, engine, ws }
    }

    pub fn key(&self, name: &str) -> keyward::CreatedKey {
        self.engine.create_key(self.ws, NewKey { name: name.into(), ..NewKey::default() }, &Actor::Admin).unwrap()
    }

    pub fn key_with(&self, spec: NewKey) -> keyward::CreatedKey {
        self.engine.create_key(self.ws, spec, &Actor::Admin).unwrap()
    }

    pub fn workspace(&self) -> Workspace {
        self.engine.workspace(self.ws).unwrap()
    }
}

pub fn open(dir: &TempDir, clock: &ManualClock) -> Engine {
    Engine::builder()
        .clock(clock.clone())
        .master_key(MASTER)
        .snapshot_key(SNAP)
        .open(dir.path().join("keyward.redb"))
        .unwrap()
}

pub fn perm(p: &str) -> keyward_core::permission::Permission {
    keyward_core::permission::Permission::parse(p).unwrap()
}

/// Signed-login headers for a key created with signing user `u1`.
pub fn login(k: &keyward::CreatedKey, nonce: &str) -> keyward_core::credentials::SignedHeaders {
    let secret = keyward_core::signature::ApiSecret::new(k.signing.as_ref().unwrap().api_secret.as_bytes().to_vec());
    keyward_core::credentials::SignedHeaders {
        api_key: zeroize::Zeroizing::new(k.token.expose().to_owned()),
        signature: keyward_core::signature::sign_hex(&secret, nonce, "u1", k.token.expose()),
        user_id: "u1".into(),
        nonce: nonce.into(),
    }
}
