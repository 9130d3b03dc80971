//! The workspace's rules for new keys: key lifetimes (default and longest)
//! and key serials (each key's number in its workspace).

mod common;

use common::{Env, T0, perm};
use keyward::{Actor, Error, KeyTtl, KeyUpdate, NewKey, WorkspaceUpdate};
use keyward_core::Code;

const DAY: u64 = 86_400_000;

fn invalid<T: std::fmt::Debug>(r: Result<T, Error>) -> (&'static str, String) {
    match r {
        Err(Error::Invalid { field, message }) => (field, message),
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

fn ttl(env: &Env, default: Option<Option<u64>>, max: Option<Option<u64>>) -> Result<keyward::Workspace, Error> {
    let update = WorkspaceUpdate { default_key_ttl_ms: default, max_key_ttl_ms: max, ..WorkspaceUpdate::default() };
    env.engine.update_workspace(env.ws, update, &Actor::Admin)
}

fn count(env: &Env) -> usize {
    env.engine.list_keys(env.ws, 100, None).unwrap().items.len()
}

#[test]
fn a_key_created_without_an_expiry_gets_the_default_lifetime() {
    let env = Env::new();
    assert_eq!(env.workspace().key_ttl, KeyTtl::default());
    let w = ttl(&env, Some(Some(30 * DAY)), None).unwrap();
    assert_eq!(w.key_ttl, KeyTtl { default_ms: Some(30 * DAY), max_ms: None });
    let k = env.key("d");
    assert_eq!(k.info.expires_at, Some(T0.plus(30 * DAY)));
    // An expiry given wins over the default, later or earlier.
    let k = env.key_with(NewKey { name: "e".into(), expires_at: Some(T0.plus(90 * DAY)), ..NewKey::default() });
    assert_eq!(k.info.expires_at, Some(T0.plus(90 * DAY)));
    let k = env.key_with(NewKey { name: "n".into(), expire_now: true, ..NewKey::default() });
    assert_eq!(k.info.expires_at, Some(T0));
    // The default lives on: the key expires when it says.
    let k = env.key("later");
    env.clock.advance(30 * DAY - 1);
    assert_eq!(env.engine.verify(k.token.expose(), &Default::default()).code, Code::Valid);
    env.clock.advance(1);
    assert_eq!(env.engine.verify(k.token.expose(), &Default::default()).code, Code::Expired);
    // The settings survive a reopen; clearing them ends them.
    let env = env.reopen();
    assert_eq!(env.workspace().key_ttl, KeyTtl { default_ms: Some(30 * DAY), max_ms: None });
    ttl(&env, Some(None), None).unwrap();
    assert_eq!(env.key("forever").info.expires_at, None);
}

#[test]
fn an_expiry_past_the_longest_lifetime_is_refused_and_nothing_is_made() {
    let env = Env::new();
    ttl(&env, None, Some(Some(90 * DAY))).unwrap();
    let before = count(&env);
    let late = NewKey { name: "late".into(), expires_at: Some(T0.plus(90 * DAY + 1)), ..NewKey::default() };
    let (field, message) = invalid(env.engine.create_key(env.ws, late, &Actor::Admin));
    assert_eq!(field, "expires_at");
    assert_eq!(message, "is later than the workspace allows: keys live at most 90d");
    assert_eq!(count(&env), before);
    // At the maximum exactly, it is made; without an expiry, the maximum applies.
    let k = env.key_with(NewKey { name: "edge".into(), expires_at: Some(T0.plus(90 * DAY)), ..NewKey::default() });
    assert_eq!(k.info.expires_at, Some(T0.plus(90 * DAY)));
    assert_eq!(env.key("none given").info.expires_at, Some(T0.plus(90 * DAY)));
    // With both, the default applies when no expiry is given.
    ttl(&env, Some(Some(7 * DAY)), None).unwrap();
    assert_eq!(env.key("default").info.expires_at, Some(T0.plus(7 * DAY)));
    // `expire_now` still wins.
    let k = env.key_with(NewKey { name: "now".into(), expire_now: true, ..NewKey::default() });
    assert_eq!(k.info.expires_at, Some(T0));
}

#[test]
fn a_later_expiry_set_afterwards_is_refused_from_the_key_s_creation() {
    let env = Env::new();
    let old = env.key("from before the rule");
    ttl(&env, None, Some(Some(10 * DAY))).unwrap();
    let k = env.key("k");
    env.clock.advance(DAY);
    // Ten days from creation, not from now.
    let at = |ms| KeyUpdate { expires_at: Some(Some(T0.plus(ms))), ..KeyUpdate::default() };
    let (field, message) = invalid(env.engine.update_key(k.info.id, at(10 * DAY + 1), &Actor::Admin));
    assert_eq!((field, message.as_str()), ("expires_at", "is later than the workspace allows: keys live at most 10d"));
    assert_eq!(env.engine.key(k.info.id).unwrap().expires_at, Some(T0.plus(10 * DAY)));
    assert_eq!(
        env.engine.update_key(k.info.id, at(10 * DAY), &Actor::Admin).unwrap().expires_at,
        Some(T0.plus(10 * DAY))
    );
    // "Never" is past any maximum.
    let never = KeyUpdate { expires_at: Some(None), ..KeyUpdate::default() };
    let (field, message) = invalid(env.engine.update_key(k.info.id, never, &Actor::Admin));
    assert_eq!((field, message.as_str()), ("expires_at", "is required: keys of this workspace live at most 10d"));
    // A key made before the rule keeps its expiry until someone changes it.
    let renamed = KeyUpdate { name: Some("renamed".into()), ..KeyUpdate::default() };
    let info = env.engine.update_key(old.info.id, renamed, &Actor::Admin).unwrap();
    assert_eq!((info.name.as_str(), info.expires_at), ("renamed", None));
}

#[test]
fn lifetimes_are_checked_and_a_bad_one_changes_nothing() {
    let env = Env::new();
    ttl(&env, Some(Some(DAY)), Some(Some(2 * DAY))).unwrap();
    let (field, message) = invalid(ttl(&env, Some(Some(3 * DAY)), None));
    assert_eq!((field, message.as_str()), ("default_key_ttl", "must not be longer than max_key_ttl"));
    let (field, message) = invalid(ttl(&env, None, Some(Some(999))));
    assert_eq!((field, message.as_str()), ("max_key_ttl", "must be 1 second to 100 years"));
    let (field, _) = invalid(ttl(&env, Some(Some(KeyTtl::MAX_MS + 1)), Some(None)));
    assert_eq!(field, "default_key_ttl");
    assert_eq!(env.workspace().key_ttl, KeyTtl { default_ms: Some(DAY), max_ms: Some(2 * DAY) });
    // Raising both at once is one change.
    let w = ttl(&env, Some(Some(3 * DAY)), Some(Some(4 * DAY))).unwrap();
    assert_eq!(w.key_ttl, KeyTtl { default_ms: Some(3 * DAY), max_ms: Some(4 * DAY) });
}

#[test]
fn a_key_changes_its_workspace_only_with_workspaces_write() {
    let env = Env::new();
    let plain = env.key_with(NewKey { name: "plain".into(), permissions: vec![perm("keys:*")], ..NewKey::default() });
    let admin =
        env.key_with(NewKey { name: "admin".into(), permissions: vec![perm("workspaces:write")], ..NewKey::default() });
    let update = || WorkspaceUpdate { default_key_ttl_ms: Some(Some(DAY)), ..WorkspaceUpdate::default() };
    match env.engine.update_workspace(env.ws, update(), &Actor::Key(plain.info.id)) {
        Err(Error::InsufficientPermissions(m)) => assert_eq!(m, "changing the workspace needs `workspaces:write`"),
        other => panic!("{other:?}"),
    }
    assert_eq!(env.workspace().key_ttl.default_ms, None);
    let w = env.engine.update_workspace(env.ws, update(), &Actor::Key(admin.info.id)).unwrap();
    assert_eq!(w.key_ttl.default_ms, Some(DAY));
    // The plan is the operator's.
    let plan = WorkspaceUpdate { api_access: Some(false), ..WorkspaceUpdate::default() };
    match env.engine.update_workspace(env.ws, plan, &Actor::Key(admin.info.id)) {
        Err(Error::InsufficientPermissions(m)) => assert_eq!(m, "only an operator changes api_access"),
        other => panic!("{other:?}"),
    }
    assert!(env.workspace().policy.api_access);
}

#[test]
fn keys_are_numbered_in_their_workspace_and_no_number_comes_twice() {
    let env = Env::new();
    let serials: Vec<Option<u64>> = (0..3).map(|i| env.key(&format!("k{i}")).info.serial).collect();
    assert_eq!(serials, [Some(1), Some(2), Some(3)]);
    // Another workspace counts on its own.
    let other = env.engine.create_workspace(keyward::NewWorkspace::named("other"), &Actor::Admin).unwrap().policy.id;
    let k = env.engine.create_key(other, NewKey { name: "o".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    assert_eq!(k.info.serial, Some(1));
    // The highest deleted, then reopened: its number is not handed out again.
    let last = env.key("k3");
    assert_eq!(last.info.serial, Some(4));
    env.engine.delete_key(last.info.id, &Actor::Admin).unwrap();
    let env = env.reopen();
    assert_eq!(env.key("k4").info.serial, Some(5));
    // A refused creation takes no number.
    ttl(&env, None, Some(Some(DAY))).unwrap();
    let late = NewKey { name: "late".into(), expires_at: Some(T0.plus(2 * DAY)), ..NewKey::default() };
    invalid(env.engine.create_key(env.ws, late, &Actor::Admin));
    let k = env.key("k5");
    assert_eq!(k.info.serial, Some(6));
    // A rotated key's successor is the same key to people: same number.
    let rotated = env.engine.rotate_key(k.info.id, 0, &Actor::Admin).unwrap();
    assert_eq!(rotated.info.serial, Some(6));
    assert_eq!(env.engine.key(rotated.info.id).unwrap().serial, Some(6));
    assert_eq!(env.key("k6").info.serial, Some(7));
    // Imported keys are numbered too.
    let import = keyward::ImportKey {
        key: NewKey { name: "imported".into(), ..NewKey::default() },
        hash: Some(keyward_core::KeyHash([7; 32])),
        start: None,
    };
    let info = env.engine.import_key(env.ws, import, &Actor::Admin).unwrap();
    assert_eq!(info.serial, Some(8));
}

#[test]
fn a_default_lifetime_ends_with_the_creator_s_own() {
    let env = Env::new();
    ttl(&env, Some(Some(30 * DAY)), None).unwrap();
    let parent = env.key_with(NewKey {
        name: "parent".into(),
        permissions: vec![perm("keys:write")],
        expires_at: Some(T0.plus(DAY)),
        ..NewKey::default()
    });
    let as_parent = Actor::Key(parent.info.id);
    let child = env.engine.create_key(env.ws, NewKey { name: "c".into(), ..NewKey::default() }, &as_parent).unwrap();
    assert_eq!(child.info.expires_at, Some(T0.plus(DAY)));
    // A creator living longer than the default leaves it as it is.
    let long = env.key_with(NewKey {
        name: "long".into(),
        permissions: vec![perm("keys:write")],
        expires_at: Some(T0.plus(60 * DAY)),
        ..NewKey::default()
    });
    let child = env
        .engine
        .create_key(env.ws, NewKey { name: "d".into(), ..NewKey::default() }, &Actor::Key(long.info.id))
        .unwrap();
    assert_eq!(child.info.expires_at, Some(T0.plus(30 * DAY)));
}
