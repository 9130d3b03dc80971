//! Issues a token, builds a policy and decides a few requests, printing each
//! verdict. Run with `cargo run -p keyward-core --example decide`.

use keyward_core::ip::{IpRule, IpRules};
use keyward_core::limits::{RateLimit, UsageState};
use keyward_core::{
    Call, Code, KeyId, KeyPolicy, Limits, Prefix, Request, Token, ToolLookup, UnixMillis, Usage, Verdict, WorkspaceId,
    WorkspacePolicy, decide, token,
};

fn main() {
    let mut rng = rand::rng();
    let prefix = Prefix::default_live();
    let token = Token::generate(&prefix, &mut rng);
    let workspace = WorkspacePolicy {
        id: WorkspaceId::generate(&mut rng),
        name: "demo".into(),
        api_access: true,
        prefix,
        ip_rules: IpRules::none(),
        default_limits: Limits::default(),
    };
    let key = KeyPolicy {
        id: KeyId::generate(&mut rng),
        workspace: workspace.id,
        hash: token.hash(),
        name: "demo key".into(),
        revoked_at: None,
        expires_at: None,
        disabled: false,
        permissions: vec![],
        ip_rules: IpRules(vec![IpRule::parse("allow", "127.0.0.0/8").expect("valid CIDR")]),
        limits: Limits {
            rates: vec![RateLimit { name: "default".into(), limit: 3, window_ms: 1_000, auto_apply: true }],
            ..Limits::default()
        },
        tool_limits: vec![],
        tools: vec![],
        meta: String::new(),
        imported: false,
    };
    println!("token  {} (shown once; only its hash is kept)", token.expose());
    println!("key    {} start={}", key.id, token.start());
    println!("format {:?}", token::check(token.expose()).map(|()| Code::Valid));
    let mut state = UsageState::default();
    for (ip, t) in
        [("127.0.0.1", 0), ("192.0.2.7", 0), ("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3), ("127.0.0.1", 400)]
    {
        let req = Request { ip: ip.parse().ok(), now: UnixMillis(t), ..Request::default() };
        let call = Call { key: &key, workspace: &workspace, tool: ToolLookup::NotRequested, request: &req };
        let mut v = Verdict::bare(Code::Valid);
        decide(&mut v, &call, Usage { key: &mut state, tool: None, key_tool: None });
        println!(
            "t={t:>4}ms ip={ip:<10} -> {:<12} http={} retry_after_ms={:?}",
            v.code,
            v.code.http_status(),
            v.retry_after_ms
        );
    }
}
