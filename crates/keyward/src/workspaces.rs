//! Workspaces and their tools.

use std::sync::Arc;

use keyward_core::credentials::check_tool_name;
use keyward_core::{Limits, ToolPolicy, WorkspaceId, WorkspacePolicy};

use crate::audit::audit;
use crate::engine::{Engine, Inner, LiveWorkspace, WorkspaceSlot};
use crate::error::{Error, Result};
use crate::model::{
    Actor, AuditAction, DEFAULT_UPSTREAM_TIMEOUT_MS, KeyTtl, LimitSync, NewTool, NewWorkspace, Tool, ToolRecord,
    ToolUpdate, Workspace, WorkspaceUpdate,
};
use crate::rng::os_rng;
use crate::store::Change;
use crate::validate::{Changes, validate_limits, validate_name, validate_timeout, validate_upstream};

impl Inner {
    /// Publishes a workspace version. Keys hold the slot: storing into it
    /// updates them all at once.
    pub(crate) fn replace_workspace(&self, live: LiveWorkspace) {
        let id = live.ws.policy.id;
        match self.workspaces.get(&id) {
            Some(slot) => slot.current.store(Arc::new(live)),
            None => {
                self.workspaces.insert(id, WorkspaceSlot::new(live));
            }
        }
    }
}

impl Engine {
    /// Creates a workspace.
    pub fn create_workspace(&self, spec: NewWorkspace, actor: &Actor) -> Result<Workspace> {
        validate_name(&spec.name)?;
        validate_limits("default_limits", &spec.default_limits)?;
        validate_limit_sync(spec.limit_sync)?;
        validate_key_ttl(spec.key_ttl)?;
        if matches!(actor, Actor::Key(_)) {
            return Err(Error::InsufficientPermissions("keys cannot create workspaces".into()));
        }
        let inner = &self.inner;
        let now = inner.now();
        let ws = Workspace {
            policy: WorkspacePolicy {
                id: WorkspaceId::generate(&mut os_rng()),
                name: spec.name,
                api_access: spec.api_access,
                prefix: spec.prefix,
                ip_rules: spec.ip_rules,
                default_limits: spec.default_limits,
            },
            created_at: now,
            limit_sync: spec.limit_sync,
            key_ttl: spec.key_ttl,
        };
        inner.write(|batch| {
            let id = ws.policy.id;
            batch.push(Change::Workspace(ws.clone()));
            audit(batch, now, actor, AuditAction::WorkspaceCreated, Some(id), id.to_string(), ws.policy.name.clone());
            Ok(move || {
                inner.replace_workspace(LiveWorkspace { ws: ws.clone(), tools: Default::default() });
                ws
            })
        })
    }

    /// A workspace by id.
    pub fn workspace(&self, id: WorkspaceId) -> Result<Workspace> {
        Ok(self.inner.workspace(id)?.ws.clone())
    }

    /// Every workspace, oldest first.
    pub fn workspaces(&self) -> Vec<Workspace> {
        let mut all: Vec<Workspace> = self.inner.workspaces.iter().map(|w| w.current.load().ws.clone()).collect();
        all.sort_by_key(|w| (w.created_at, w.policy.id));
        all
    }

    /// Changes a workspace.
    pub fn update_workspace(&self, id: WorkspaceId, update: WorkspaceUpdate, actor: &Actor) -> Result<Workspace> {
        let inner = &self.inner;
        if let Actor::Key(k) = actor {
            let acting = inner.key(*k)?;
            // A key of another workspace learns nothing about this one.
            if acting.policy().workspace != id {
                return Err(Error::not_found("workspace", id));
            }
            if !keyward_core::permission::granted(&acting.policy().permissions, "workspaces:write") {
                return Err(Error::InsufficientPermissions("changing the workspace needs `workspaces:write`".into()));
            }
            // The plan is the operator's: a key does not grant its
            // workspace API access (or take it away).
            if update.api_access.is_some() {
                return Err(Error::InsufficientPermissions("only an operator changes api_access".into()));
            }
        }
        if let Some(n) = &update.name {
            validate_name(n)?;
        }
        if let Some(l) = &update.default_limits {
            validate_limits("default_limits", l)?;
        }
        if let Some(sync) = update.limit_sync {
            validate_limit_sync(sync)?;
        }
        let now = inner.now();
        inner.write(|batch| {
            let mut live = LiveWorkspace::clone(&*inner.workspace(id)?);
            let p = &mut live.ws.policy;
            let mut changed = Changes::default();
            changed.set("name", &mut p.name, update.name);
            changed.set("prefix", &mut p.prefix, update.prefix);
            changed.set("api_access", &mut p.api_access, update.api_access);
            changed.set("ip_rules", &mut p.ip_rules, update.ip_rules);
            changed.set("default_limits", &mut p.default_limits, update.default_limits);
            changed.set("limit_sync", &mut live.ws.limit_sync, update.limit_sync);
            let ttl = &mut live.ws.key_ttl;
            changed.set("default_key_ttl", &mut ttl.default_ms, update.default_key_ttl_ms);
            changed.set("max_key_ttl", &mut ttl.max_ms, update.max_key_ttl_ms);
            validate_key_ttl(*ttl)?;
            batch.push(Change::Workspace(live.ws.clone()));
            audit(batch, now, actor, AuditAction::WorkspaceUpdated, Some(id), id.to_string(), changed.list());
            Ok(move || {
                let out = live.ws.clone();
                inner.replace_workspace(live);
                out
            })
        })
    }

    // ---- tools ----------------------------------------------------------

    /// Creates a tool in a workspace.
    pub fn create_tool(&self, ws: WorkspaceId, spec: NewTool, actor: &Actor) -> Result<Tool> {
        let inner = &self.inner;
        inner.workspace(ws)?;
        let acting = inner.acting_key(actor, ws)?;
        check_tool_name(&spec.name).map_err(|e| Error::invalid("name", e.to_string()))?;
        if let Some(url) = &spec.upstream {
            validate_upstream(url)?;
        }
        let timeout_ms = spec.timeout_ms.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_MS);
        validate_timeout(timeout_ms)?;
        if let (Some(a), Some(p)) = (&acting, &spec.permission)
            && keyward_core::permission::first_uncovered(&a.policy().permissions, std::slice::from_ref(p)).is_some()
        {
            return Err(Error::InsufficientPermissions(format!(
                "permission: a tool needing `{p}` can only be made by a key holding it"
            )));
        }
        let limits = Limits { cooldown_ms: spec.cooldown_ms, daily: spec.daily_limit, ..Limits::default() };
        let policy =
            ToolPolicy { workspace: ws, name: spec.name, enabled: spec.enabled, permission: spec.permission, limits };
        let now = inner.now();
        inner.write(|batch| {
            let current = inner.workspace(ws)?;
            inner.acting_key(actor, ws)?;
            if current.tools.contains_key(&policy.name) {
                return Err(Error::AlreadyExists { kind: "tool", id: policy.name.clone() });
            }
            let rec =
                ToolRecord { policy: policy.clone(), created_at: now, upstream: spec.upstream.clone(), timeout_ms };
            batch.push(Change::Tool(rec.clone()));
            audit(batch, now, actor, AuditAction::ToolCreated, Some(ws), policy.name.clone(), "");
            Ok(move || {
                let tool = rec.tool();
                let mut live = LiveWorkspace::clone(&current);
                live.tools.insert(policy.name.clone(), Arc::new(rec));
                inner.replace_workspace(live);
                tool
            })
        })
    }

    /// Changes a tool.
    pub fn update_tool(&self, ws: WorkspaceId, name: &str, update: ToolUpdate, actor: &Actor) -> Result<Tool> {
        if let Some(Some(url)) = &update.upstream {
            validate_upstream(url)?;
        }
        if let Some(Some(ms)) = update.timeout_ms {
            validate_timeout(ms)?;
        }
        let inner = &self.inner;
        let now = inner.now();
        inner.write(|batch| {
            let acting = inner.acting_key(actor, ws)?;
            let current = inner.workspace(ws)?;
            let Some(old) = current.tools.get(name) else {
                return Err(Error::not_found("tool", name));
            };
            // A key changes a tool's permission only if it holds both the
            // permission it replaces and the one it sets.
            if let (Some(a), Some(new)) = (&acting, &update.permission) {
                for p in old.policy.permission.iter().chain(new.iter()) {
                    if keyward_core::permission::first_uncovered(&a.policy().permissions, std::slice::from_ref(p))
                        .is_some()
                    {
                        return Err(Error::InsufficientPermissions(format!(
                            "permission: changing tool `{name}` needs `{p}`, which the acting key lacks"
                        )));
                    }
                }
            }
            let mut rec = ToolRecord::clone(old);
            let t = &mut rec.policy;
            let mut changed = Changes::default();
            changed.set("enabled", &mut t.enabled, update.enabled);
            changed.set("permission", &mut t.permission, update.permission);
            changed.set("cooldown_ms", &mut t.limits.cooldown_ms, update.cooldown_ms);
            changed.set("daily_limit", &mut t.limits.daily, update.daily_limit);
            changed.set("upstream", &mut rec.upstream, update.upstream.clone());
            let timeout = update.timeout_ms.map(|t| t.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_MS));
            changed.set("timeout_ms", &mut rec.timeout_ms, timeout);
            batch.push(Change::Tool(rec.clone()));
            audit(batch, now, actor, AuditAction::ToolUpdated, Some(ws), name, changed.list());
            Ok(move || {
                let tool = rec.tool();
                let mut live = LiveWorkspace::clone(&current);
                live.tools.insert(name.to_owned(), Arc::new(rec));
                inner.replace_workspace(live);
                tool
            })
        })
    }

    /// Tools of a workspace, by name.
    pub fn tools(&self, ws: WorkspaceId) -> Result<Vec<Tool>> {
        let w = self.inner.workspace(ws)?;
        let mut all: Vec<Tool> = w.tools.values().map(|t| t.tool()).collect();
        all.sort_by(|a, b| a.policy.name.cmp(&b.policy.name));
        Ok(all)
    }

    /// One tool of a workspace (what the gateway reads on each call).
    pub fn tool(&self, ws: WorkspaceId, name: &str) -> Result<Tool> {
        let w = self.inner.workspace(ws)?;
        w.tools.get(name).map(|t| t.tool()).ok_or_else(|| Error::not_found("tool", name))
    }
}

/// Longest reconciliation interval of [`LimitSync::Local`]: a minute.
const MAX_LOCAL_SYNC_MS: u64 = 60_000;

fn validate_key_ttl(ttl: KeyTtl) -> Result<()> {
    for (field, ms) in [("default_key_ttl", ttl.default_ms), ("max_key_ttl", ttl.max_ms)] {
        if let Some(ms) = ms
            && !(1_000..=KeyTtl::MAX_MS).contains(&ms)
        {
            return Err(Error::invalid(field, "must be 1 second to 100 years"));
        }
    }
    if let (Some(d), Some(m)) = (ttl.default_ms, ttl.max_ms)
        && d > m
    {
        return Err(Error::invalid("default_key_ttl", "must not be longer than max_key_ttl"));
    }
    Ok(())
}

fn validate_limit_sync(sync: LimitSync) -> Result<()> {
    match sync {
        LimitSync::Local { ms } if !(1..=MAX_LOCAL_SYNC_MS).contains(&ms) => {
            Err(Error::invalid("limit_sync", format!("local_ms must be 1 to {MAX_LOCAL_SYNC_MS}")))
        }
        _ => Ok(()),
    }
}
