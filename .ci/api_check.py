"""Checks real answers of a live server against its own /openapi.json.

schemathesis mostly generates bodies the server refuses; this sends valid
ones so the success shapes are checked too. Usage: api_check.py BASE ROOT.
"""
import json
import sys
import urllib.request

import jsonschema

base, root = sys.argv[1], sys.argv[2]


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + root)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


doc = call("GET", "/openapi.json")[1]


def check(method, path, template, body=None):
    status, answer = call(method, path, body)
    op = doc["paths"][template][method.lower()]
    ref = op["responses"][str(status)]["content"]["application/json"]["schema"]
    schema = dict(ref, components=doc["components"])
    jsonschema.Draft202012Validator(schema).validate(answer)
    print(f"{method} {path}: {status} conforms")
    return answer


spec = {
    "name": "full",
    "expires_at": "2099-01-01T00:00:00.000Z",
    "ip_rules": [{"action": "allow", "cidr": "0.0.0.0/0"}],
    "limits": {"rate": {"limit": 100, "window_ms": 1000}, "cooldown_ms": 1, "daily": 100, "concurrency": 2,
               "credits": {"remaining": 7, "refill": {"interval": "monthly", "amount": 7, "day": 3}}},
    "tools": ["gl_ping"],
    "meta": {"team": "a"},
}
key = check("POST", "/v1/api-keys", "/v1/api-keys", spec)["data"]
kid = key["id"]
check("POST", "/v1/api-keys/batch", "/v1/api-keys/batch", {"keys": [spec, {"name": "b"}]})
check("GET", "/v1/api-keys?limit=2", "/v1/api-keys")
check("GET", f"/v1/api-keys/{kid}", "/v1/api-keys/{id}")
check("PATCH", f"/v1/api-keys/{kid}", "/v1/api-keys/{id}", {"meta": None, "credits": {"remaining": 3}})
check("POST", "/v1/verify", "/v1/verify", {"key": key["secret"], "tool": "gl_ping", "hold": True})
check("POST", "/v1/verify", "/v1/verify", {"key": "kw_live_nope"})
check("GET", f"/v1/api-keys/{kid}/usage", "/v1/api-keys/{id}/usage")
check("GET", f"/v1/api-keys/{kid}/usage/history?granularity=minute", "/v1/api-keys/{id}/usage/history")
check("GET", "/v1/usage/history", "/v1/usage/history")
rotated = check("POST", f"/v1/api-keys/{kid}/rotate", "/v1/api-keys/{id}/rotate", {"grace_seconds": 5})["data"]
check("POST", f"/v1/api-keys/{rotated['id']}/revoke", "/v1/api-keys/{id}/revoke")
check("DELETE", f"/v1/api-keys/{kid}", "/v1/api-keys/{id}")
check("GET", "/v1/audit?limit=3", "/v1/audit")
check("POST", "/v1/tools", "/v1/tools", {"name": "t1", "permission": "tools:t1", "daily_limit": 5})
check("PATCH", "/v1/tools/t1", "/v1/tools/{name}", {"enabled": False, "daily_limit": None})
check("GET", "/v1/tools", "/v1/tools")
ws = key["workspace_id"]
check("GET", f"/v1/workspaces/{ws}", "/v1/workspaces/{id}")
check("PATCH", f"/v1/workspaces/{ws}", "/v1/workspaces/{id}", {"default_key_ttl": 3600})
check("POST", "/api/v1/keys", "/api/v1/keys", {"title": "mall"})
check("GET", "/v1/auth", "/v1/auth")
check("GET", "/healthz", "/healthz")
check("GET", "/v1/api-keys/key_nope", "/v1/api-keys/{id}")
