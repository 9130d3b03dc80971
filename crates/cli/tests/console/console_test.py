"""The keyward console in a real browser (headless Chromium through Selenium).

Run by crates/cli/tests/console.rs against a fresh `keyward serve`:
KEYWARD_URL (http://127.0.0.1:PORT), KEYWARD_ROOT_KEY, KEYWARD_SHOTS (a folder
for screenshots), KEYWARD_CHROMIUM and KEYWARD_CHROMEDRIVER (binaries).
Exits 0 when every check passes; prints the failed check otherwise.
"""

import datetime
import json
import os
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

BASE = os.environ["KEYWARD_URL"].rstrip("/")
ROOT = os.environ["KEYWARD_ROOT_KEY"]
SHOTS = os.environ["KEYWARD_SHOTS"]
os.makedirs(SHOTS, exist_ok=True)


def call(method, path, key=None, body=None, headers=None, raw=None, content_type="application/json"):
    """One HTTP request; (status, JSON body or None)."""
    h = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = content_type
    if raw is not None:
        data = raw
        h["Content-Type"] = content_type
    if key:
        h["Authorization"] = "Bearer " + key
    req = urllib.request.Request(BASE + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, None


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what, flush=True)


def all_keys():
    status, body = call("GET", "/v1/api-keys?limit=100", ROOT)
    check(status == 200, "list keys through the API")
    return body["data"]["items"]


def key_named(name):
    found = [k for k in all_keys() if k["name"] == name]
    return found[0] if found else None


def ping(secret):
    return call("POST", "/api/v2/gl_ping", headers={"X-API-Key": secret}, body={"ip": "203.0.113.9"})


opts = webdriver.ChromeOptions()
opts.binary_location = os.environ.get("KEYWARD_CHROMIUM", "/usr/bin/chromium")
for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000", "--disable-gpu"]:
    opts.add_argument(a)
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service(os.environ.get("KEYWARD_CHROMEDRIVER", "/usr/bin/chromedriver")), options=opts)
wait = WebDriverWait(driver, 15)
logs = []


def el(css):
    return driver.find_element(By.CSS_SELECTOR, css)


def present(css):
    return len(driver.find_elements(By.CSS_SELECTOR, css)) > 0


def visible(css):
    return wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))


def gone(css):
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, css))


def shot(name):
    driver.save_screenshot(os.path.join(SHOTS, name + ".png"))


def text_in(css, text):
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))


def collect_logs():
    logs.extend(driver.get_log("browser"))


def sign_in(key):
    driver.get(BASE + "/console/")
    visible("#signin-key").send_keys(key)
    el("#signin-submit").click()
    visible("#keys-table")


try:
    # ---- sign in ---------------------------------------------------------
    driver.get(BASE + "/console/")
    visible("#signin-form")
    shot("01-sign-in")
    el("#signin-key").send_keys("kw_live_not_a_real_key_at_all")
    el("#signin-submit").click()
    text_in("#signin-error", "refused")
    check(not present("#keys-table"), "a bad key does not sign in")
    el("#signin-key").clear()
    el("#signin-key").send_keys(ROOT)
    el("#signin-submit").click()
    visible("#keys-table")
    text_in("#whoami", "root")
    shot("02-keys")

    cookies = {c["name"]: c for c in driver.get_cookies()}
    check("keyward_session" in cookies, "the session cookie is set")
    cookie = cookies["keyward_session"]
    check(cookie.get("httpOnly") is True, "the session cookie is HttpOnly")
    check(cookie.get("sameSite") == "Strict", "the session cookie is SameSite=Strict")
    check("keyward_session" not in driver.execute_script("return document.cookie"), "page scripts cannot read the cookie")
    check(ROOT not in driver.execute_script("return JSON.stringify(localStorage) + JSON.stringify(sessionStorage)"),
          "the key is not kept in browser storage")

    # ---- create: empty name --------------------------------------------------
    before = len(all_keys())
    el("#create-key").click()
    visible("#create-dialog")
    el("#create-submit").click()
    text_in("#create-name-error", "name")
    check(el("#create-name").get_attribute("aria-invalid") == "true", "the empty name is marked invalid")
    time.sleep(0.3)
    check(len(all_keys()) == before, "an empty name creates nothing")
    shot("03-create-empty-name")

    # ---- create: a bad CIDR is caught in the page ----------------------------
    el("#create-name").send_keys("browser-key")
    el("#create-ip-add").click()
    visible("#create-ip-cidr-0").send_keys("127.0.0.0/33")
    el("#create-submit").click()
    text_in("#create-error", "not an address or CIDR")
    check(len(all_keys()) == before, "a bad CIDR creates nothing")

    # ---- create: IP rule and rate limit ----------------------------------------
    el("#create-ip-cidr-0").clear()
    el("#create-ip-cidr-0").send_keys("127.0.0.0/8")
    el("#create-rate-limit").send_keys("3")
    el("#create-rate-window").send_keys("60")
    el("#create-submit").click()
    visible("#secret-dialog")
    secret = el("#secret-value").get_attribute("value")
    check(secret.startswith("kw_"), "the secret is shown once in a dialog")
    el("#secret-value-copy").click()
    text_in("#secret-value-copied", "Copied")
    check(True, "the secret has a working copy button")
    text_in("#secret-dialog .warning", "only time")
    shot("04-secret")
    el("#secret-close").click()
    gone("#secret-dialog")
    check(secret not in driver.page_source, "closing the dialog removes the secret")
    driver.refresh()
    visible("#keys-table")
    check(secret not in driver.page_source, "after a reload the secret is gone")
    check(secret not in driver.execute_script("return JSON.stringify(localStorage) + JSON.stringify(sessionStorage)"),
          "the secret is not kept in browser storage")
    k = key_named("browser-key")
    check(k is not None and len(all_keys()) == before + 1, "the key was created")
    check(k["ip_rules"] == [{"action": "allow", "cidr": "127.0.0.0/8"}], "with its IP rule")
    check(k["limits"].get("rate") == {"limit": 3, "window_ms": 60000}, "and its rate limit")
    key_id = k["id"]

    # ---- the gateway -------------------------------------------------------
    status, body = ping(secret)
    check(status == 200 and body["data"] == {"ip": "203.0.113.9"}, "the new secret is valid at the gateway")
    statuses = [ping(secret)[0] for _ in range(3)]
    check(statuses == [200, 200, 429], "the fourth call in a minute is rate limited (429): %r" % statuses)

    # ---- the key page and its chart -----------------------------------------
    # The history is written behind (every 50 ms here): wait until it holds
    # the calls, so the chart is drawn from them.
    deadline = time.time() + 10
    while True:
        hist, hbody = call("GET", "/v1/api-keys/%s/usage/history?granularity=minute" % key_id, ROOT)
        counts = {}
        if hist == 200:
            for b in hbody["data"]["buckets"]:
                for code, n in b["counts"].items():
                    counts[code] = counts.get(code, 0) + n
        if hist != 200 or counts.get("RATE_LIMITED") == 1:
            break
        if time.time() >= deadline:
            check(False, "the usage history shows the gateway calls: %r" % counts)
        time.sleep(0.05)
    search = visible("#key-search")
    search.send_keys("browser")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#keys-body tr[data-key-id]")) == 1)
    check(present('#keys-body tr[data-key-id="%s"]' % key_id), "search by name finds the key")
    search.clear()
    driver.find_element(By.LINK_TEXT, "browser-key").click()
    visible("#key-title")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#usage-svg, #usage-empty, #usage-error"))
    check(not present("#usage-error"), "the usage history loads")
    hist, _ = call("GET", "/v1/api-keys/%s/usage/history?granularity=minute" % key_id, ROOT)
    if hist == 200:
        check(present('#usage-svg rect[data-outcome="valid"]'), "the chart shows valid calls")
        check(present('#usage-svg rect[data-outcome="rate"]'), "the chart shows rate-limited calls")
        text_in("#usage-summary", "1 rate limited")
    else:
        text_in("#usage-empty", "No usage history yet")
        print("note: the usage history endpoint answers %d; the chart shows its empty state" % hist)
    shot("05-key")

    # ---- the chart against the history contract, whatever the server has ---
    # The page's own module draws a payload shaped like the documented
    # `GET /v1/api-keys/{id}/usage/history` answer (fetch is stubbed for it).
    drawn = driver.execute_async_script("""
const done = arguments[arguments.length - 1];
(async () => {
  const { usageChart } = await import('/console/assets/chart.js');
  const real = window.fetch;
  const hour = Math.floor(Date.now() / 3600e3) * 3600e3;
  let asked = null;
  window.fetch = async (url, init) => {
    if (!String(url).includes('/usage/history')) return real(url, init);
    asked = String(url);
    const body = { success: true, request_id: 'req_00000000000000000000', data: { granularity: 'hour', buckets: [
      { start: new Date(hour - 3600e3).toISOString(), counts: { VALID: 2, IP_DENIED: 2 } },
      { start: new Date(hour).toISOString(), counts: { VALID: 3, RATE_LIMITED: 1 } },
    ] } };
    return new Response(JSON.stringify(body), { status: 200, headers: { 'Content-Type': 'application/json' } });
  };
  const box = document.createElement('div');
  box.id = 'contract-chart';
  box.className = 'card';
  document.getElementById('view').prepend(box);
  try { await usageChart(box, 'key_contract', '24h-hour'); } finally { window.fetch = real; }
  const rects = [...box.querySelectorAll('rect')].map((r) => [r.dataset.outcome, Number(r.dataset.count)]);
  const summary = box.querySelector('#usage-summary').textContent;
  box.scrollIntoView();
  done({ rects, summary, asked });
})().catch((e) => done({ error: String(e) }));
""")
    check("error" not in drawn, "the chart module runs: %r" % drawn)
    shot("05b-chart-from-contract")
    driver.execute_script("document.getElementById('contract-chart').remove()")
    check(drawn["rects"] == [["valid", 2], ["other", 2], ["valid", 3], ["rate", 1]],
          "the chart stacks valid, rate-limited and other refusals per bucket: %r" % drawn["rects"])
    check("5 valid, 1 rate limited, 2 other refusals" in drawn["summary"], "the chart sums the period")
    check("/v1/api-keys/key_contract/usage/history?granularity=hour&from=" in drawn["asked"] and "&to=" in drawn["asked"],
          "the chart asks for hourly buckets of the period: %s" % drawn["asked"])

    # ---- edit: name and daily limit, the rest kept ----------------------------
    name_in = el("#edit-name")
    name_in.clear()
    name_in.send_keys("browser-key-renamed")
    el("#edit-daily").send_keys("100")
    el("#edit-save").click()
    text_in("#key-title", "browser-key-renamed")
    k = key_named("browser-key-renamed")
    check(k is not None and k["id"] == key_id, "the edit renamed the key")
    check(k["limits"].get("daily") == 100 and k["limits"].get("rate") == {"limit": 3, "window_ms": 60000},
          "the edit set the daily limit and kept the rate limit")
    check(k["ip_rules"] == [{"action": "allow", "cidr": "127.0.0.0/8"}], "the edit kept the IP rule")
    el("#edit-ip-cidr-0").clear()
    el("#edit-ip-cidr-0").send_keys("127.0.0.0/40")
    el("#edit-save").click()
    text_in("#edit-error", "not an address or CIDR")
    check(key_named("browser-key-renamed")["ip_rules"] == [{"action": "allow", "cidr": "127.0.0.0/8"}],
          "a bad CIDR in the edit changes nothing")
    el("#edit-ip-cidr-0").clear()
    el("#edit-ip-cidr-0").send_keys("127.0.0.0/8")

    # ---- revoke in the console ----------------------------------------------
    el("#revoke-key").click()
    visible("#confirm-dialog")
    shot("06-revoke-confirm")
    el("#confirm-ok").click()
    text_in("#key-status", "revoked")
    status, body = ping(secret)
    check(status == 401 and body["error"]["code"] == "REVOKED", "after the console revoked it, the key is refused (REVOKED)")

    # ---- tools and audit pages ----------------------------------------------
    el("#nav-tools").click()
    visible("#tools-table")
    check(present("#tool-gl_ping-enabled"), "the tools page lists gl_ping")
    shot("07-tools")
    el("#nav-audit").click()
    visible("#audit-table")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#audit-body tr[data-action="key.revoked"]'))
    check(True, "the audit log shows the revocation")
    shot("08-audit")

    # ---- the workspace page: key lifetimes ------------------------------------
    WS = call("GET", "/v1/api-keys?limit=1", ROOT)[1]["data"]["items"][0]["workspace_id"]
    el("#nav-workspace").click()
    visible("#workspace-details")
    text_in("#workspace-default-ttl", "—")
    el("#ttl-default-value").send_keys("90")
    el("#ttl-max-value").send_keys("30")
    el("#ttl-submit").click()
    text_in("#ttl-error", "cannot be longer")
    check(call("GET", "/v1/workspaces/" + WS, ROOT)[1]["data"]["default_key_ttl"] is None,
          "a default longer than the longest is refused in the page and nothing changes")
    el("#ttl-default-value").clear()
    el("#ttl-default-value").send_keys("30")
    el("#ttl-max-value").clear()
    el("#ttl-max-value").send_keys("90")
    el("#ttl-submit").click()
    text_in("#workspace-default-ttl", "30 days")
    text_in("#workspace-max-ttl", "90 days")
    w = call("GET", "/v1/workspaces/" + WS, ROOT)[1]["data"]
    check((w["default_key_ttl"], w["max_key_ttl"]) == (2592000, 7776000), "the lifetimes are saved in seconds: %r" % w)
    made = call("POST", "/v1/api-keys", ROOT, {"name": "lifetime"})[1]["data"]
    stamp = lambda t: datetime.datetime.fromisoformat(t.replace("Z", "+00:00"))
    lived = stamp(made["expires_at"]) - stamp(made["created_at"])
    check(lived == datetime.timedelta(days=30), "a key created without an expiry gets the default lifetime: %s" % lived)
    shot("08b-workspace")
    el("#ttl-default-value").clear()
    el("#ttl-max-value").clear()
    el("#ttl-submit").click()
    text_in("#workspace-max-ttl", "—")
    w = call("GET", "/v1/workspaces/" + WS, ROOT)[1]["data"]
    check((w["default_key_ttl"], w["max_key_ttl"]) == (None, None), "empty fields clear the lifetimes")

    # ---- a cross-site post with the cookie but no CSRF token ------------------
    victim = call("POST", "/v1/api-keys", ROOT, {"name": "victim"})[1]["data"]
    jar = "keyward_session=" + cookie["value"]
    status, body = call("POST", "/v1/api-keys/%s/revoke" % victim["id"], headers={"Cookie": jar},
                        raw=b"confirm=1", content_type="application/x-www-form-urlencoded")
    check(status == 403 and body["error"]["code"] == "csrf", "a form post with the cookie but no CSRF token is refused (403)")
    status, _ = call("POST", "/v1/api-keys", headers={"Cookie": jar, "X-CSRF-Token": "0" * 64}, body={"name": "forged"})
    check(status == 403, "a wrong CSRF token is refused (403)")
    check(key_named("victim")["status"] == "active" and key_named("forged") is None, "nothing changed")

    # ---- rotate with a grace period ----------------------------------------------
    victim_secret = victim["secret"]
    driver.get(BASE + "/console/#/keys/" + victim["id"])
    visible("#rotate-grace")
    el("#rotate-grace").clear()
    el("#rotate-grace").send_keys("60")
    el("#rotate-key").click()
    visible("#confirm-dialog")
    el("#confirm-ok").click()
    visible("#secret-dialog")
    rotated = el("#secret-value").get_attribute("value")
    check(rotated.startswith("kw_") and rotated != victim_secret, "rotation shows the new secret once")
    el("#secret-close").click()
    gone("#secret-dialog")
    check(ping(rotated)[0] == 200, "the new secret works")
    check(ping(victim_secret)[0] == 200, "the old secret works during the grace period")

    # ---- a key that may only read keys ----------------------------------------
    reader = call("POST", "/v1/api-keys", ROOT, {"name": "reader", "permissions": ["keys:read"]})[1]["data"]["secret"]
    el("#signout").click()
    visible("#signin-form")
    gone("#keys-table")
    check("keyward_session" not in {c["name"] for c in driver.get_cookies()}, "signing out clears the cookie")
    status, _ = call("GET", "/v1/api-keys", headers={"Cookie": jar})
    check(status == 401, "the ended session no longer works")
    sign_in(reader)
    check(not present("#create-key"), "a keys:read key is offered no create button")
    check(not present("#nav-audit") or not el("#nav-audit").is_displayed(), "nor the audit log")
    check(not el("#nav-workspace").is_displayed(), "nor the workspace page")
    driver.find_element(By.LINK_TEXT, "victim").click()
    visible("#key-title")
    check(not present("#revoke-key") and not present("#delete-key") and not present("#edit-form"),
          "a keys:read key is offered no revoke, delete or edit")
    visible("#read-only-note")
    shot("09-read-only")

    # ---- phone width ------------------------------------------------------------
    driver.set_window_size(390, 844)
    driver.get(BASE + "/console/#/keys")
    visible("#keys-table")
    overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    check(overflow <= 1, "the keys page fits a phone's width (overflow %dpx)" % overflow)
    shot("10-phone-keys")

    # ---- keyboard: the sign-in form works without a mouse -----------------------
    el("#signout").click()
    visible("#signin-form")
    active = driver.switch_to.active_element
    check(active.get_attribute("id") == "signin-key", "the key field has the focus after signing out")

    collect_logs()
    bad = [e for e in logs if "Content Security Policy" in e["message"] or "Uncaught" in e["message"]]
    check(not bad, "no script error or CSP violation in the browser: %r" % bad)
    print("console scenario passed", flush=True)
except (AssertionError, TimeoutException, KeyError, TypeError) as e:
    try:
        shot("failure")
        collect_logs()
    except Exception:  # noqa: BLE001 — best effort while failing
        pass
    print("FAILED:", type(e).__name__, e, file=sys.stderr)
    for entry in logs[-20:]:
        print("browser:", entry.get("message"), file=sys.stderr)
    sys.exit(1)
finally:
    driver.quit()
