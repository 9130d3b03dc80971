"""The unmodified `notbank` 2.5.0 client against `keyward serve` over HTTPS.

Starts `$KEYWARD_BIN serve --tls-cert --tls-key` on a fresh database (the
certificate and the CA that signed it come from `$KEYWARD_TLS_DIR`: ca.pem,
cert.pem, key.pem), creates a signing key with the `unique` nonce policy
through the admin API, then through the SDK: authenticates (the SDK sends
random nonces), calls an `aptoken`-protected gateway tool with the session it
got, logs out, and checks that a wrong secret, a logged-out session and an
untrusted certificate are refused. Run by .ci/compat-apex.sh; exits non-zero
on the first failure.
"""

import os
import queue
import subprocess
import sys
import tempfile
import threading

import certifi
import requests
from notbank_python_sdk.client_connection_factory import new_rest_client_connection
from notbank_python_sdk.error import ErrorCode, NotbankException
from notbank_python_sdk.notbank_client import NotbankClient
from notbank_python_sdk.requests_models.authenticate_request import AuthenticateRequest
from notbank_python_sdk.requests_models.get_user_info import GetUserInfoRequest

LISTENING = "keyward listening on https://"
ROOT_KEY = "ROOT KEY (shown once, store it now): "
USER_ID = 96


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def raises(fn, exc_type):
    """Runs `fn`, which must raise `exc_type`; returns the exception."""
    try:
        fn()
    except exc_type as e:
        return e
    raise Failure(f"{fn} did not raise {exc_type.__name__}")


def start(binary, tls_dir, work):
    proc = subprocess.Popen(
        [
            binary, "--db", os.path.join(work, "keyward.redb"), "serve",
            "--listen", "127.0.0.1:0",
            "--tls-cert", os.path.join(tls_dir, "cert.pem"),
            "--tls-key", os.path.join(tls_dir, "key.pem"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    root = addr = None
    while addr is None:
        line = lines.get(timeout=30)
        if line is None:
            raise Failure(f"keyward exited early with {proc.wait()}")
        if line.startswith(ROOT_KEY):
            root = line[len(ROOT_KEY):]
            line = ROOT_KEY + "<redacted>"
        elif line.startswith(LISTENING):
            addr = line[len(LISTENING):]
        print(f"  keyward: {line}")
    check(root, "no root key printed")
    return proc, lines, addr, root


def run(binary, tls_dir, work):
    ca = os.path.join(tls_dir, "ca.pem")
    # notbank talks through `requests`, which trusts REQUESTS_CA_BUNDLE.
    os.environ["REQUESTS_CA_BUNDLE"] = ca
    proc, lines, addr, root = start(binary, tls_dir, work)
    try:
        base = f"https://{addr}"

        # A signing key for a client that sends random nonces.
        r = requests.post(
            f"{base}/v1/api-keys",
            headers={"Authorization": f"Bearer {root}"},
            json={"name": "notbank-compat", "signing": {"user_id": str(USER_ID), "nonce_policy": "unique"}},
            timeout=20,
        )
        check(r.status_code == 201, f"create key: {r.status_code} {r.text}")
        created = r.json()["data"]
        check(created["nonce_policy"] == "unique", f"nonce_policy: {created}")
        api_key, api_secret = created["secret"], created["api_secret"]
        print("ok   created a signing key with nonce_policy=unique")

        # The SDK, as its README shows it, pointed at host:port (it adds https://).
        client = NotbankClient(new_rest_client_connection(url=addr))
        login = AuthenticateRequest(api_public_key=api_key, api_secret_key=api_secret, user_id=USER_ID)
        auth = client.authenticate(login)
        check(auth.authenticated is True, f"authenticate: {auth}")
        check(auth.session_token.startswith("kw_session_"), f"SessionToken: {auth.session_token}")
        check(auth.errormsg is None and auth.locked is False and auth.requires_2fa is False, f"flags: {auth}")
        user = auth.user
        check(
            (user.user_id, user.user_name, user.account_id, user.oms_id, user.email, user.use_2fa)
            == (USER_ID, "notbank-compat", USER_ID, 1, "", False),
            f"User: {user}",
        )
        print(f"ok   authenticated through notbank: {user}")

        # Again: new random nonces, and the SDK now also sends its last aptoken.
        sessions = {auth.session_token}
        for _ in range(4):
            sessions.add(client.authenticate(login).session_token)
        check(len(sessions) == 5, f"sessions: {sessions}")
        session = client.authenticate(login).session_token
        print("ok   re-authenticated 5 times with random nonces")

        def ping():
            return requests.post(
                f"{base}/api/v2/gl_ping", headers={"aptoken": session}, json={"ip": "203.0.113.7"}, timeout=20
            )

        r = ping()
        check(r.status_code == 200 and r.json()["data"] == {"ip": "203.0.113.7"}, f"gl_ping: {r.status_code} {r.text}")
        print("ok   aptoken-protected gl_ping with the SDK's session")

        check(client.logout() is None, "logout")
        r = ping()
        check(r.status_code == 401, f"gl_ping after logout: {r.status_code} {r.text}")
        e = raises(client.logout, NotbankException)
        check(e.code == ErrorCode.NOT_AUTHORIZED, f"second logout: {e.code} {e}")
        print(f"ok   logged out; the session is refused; a second LogOut raises {e.code}: {e}")

        e = raises(lambda: client.get_user_info(GetUserInfoRequest(user_id=USER_ID)), NotbankException)
        check("code=404" in str(e) and "Endpoint Not Found" in str(e), f"GetUserInfo: {e}")
        print("ok   unsupported APEX calls raise: 404 Endpoint Not Found")

        wrong = NotbankClient(new_rest_client_connection(url=addr))
        e = raises(
            lambda: wrong.authenticate(
                AuthenticateRequest(api_public_key=api_key, api_secret_key="0" * 64, user_id=USER_ID)
            ),
            NotbankException,
        )
        check(e.code == ErrorCode.OPERATION_FAILED, f"wrong secret: {e.code} {e}")
        check(str(e) == "Invalid signature (INVALID_SIGNATURE)", f"wrong secret: {e}")
        print(f"ok   wrong secret refused: {e.code}: {e}")

        # Proof that the certificate is really checked: without our CA, no deal.
        os.environ["REQUESTS_CA_BUNDLE"] = certifi.where()
        untrusting = NotbankClient(new_rest_client_connection(url=addr))
        raises(lambda: untrusting.authenticate(login), requests.exceptions.SSLError)
        os.environ["REQUESTS_CA_BUNDLE"] = ca
        print("ok   a client without the test CA refuses the certificate")
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
    check(code == 0, f"keyward exited with {code} on SIGTERM")
    rest = []
    while (line := lines.get(timeout=10)) is not None:
        rest.append(line)
    check(rest == ["keyward stopped"], f"keyward's last words: {rest}")
    print("ok   keyward stopped cleanly on SIGTERM")


def main():
    binary, tls_dir = os.environ.get("KEYWARD_BIN"), os.environ.get("KEYWARD_TLS_DIR")
    if not binary or not tls_dir:
        print("set KEYWARD_BIN (the keyward binary) and KEYWARD_TLS_DIR (ca.pem, cert.pem, key.pem)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work:
        try:
            run(binary, tls_dir, work)
        except Exception as e:  # any failure, ours or the SDK's, fails the run
            print(f"FAIL {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    print("APEX compat: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
