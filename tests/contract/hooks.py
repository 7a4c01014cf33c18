"""Schemathesis hooks for Tollgate's contract run.

Authenticated routes get a fresh access token for every request, so that
routes which end sessions (sign-out, password change, account deletion)
cannot starve the rest of the run of a live token. The introspection
routes get the service credential instead. Each worker thread signs in as
a user of its own, so one thread's password change or account deletion
never pulls the token from under another's request.

Schemathesis reuses values it saw in answers, the token owner's username
among them, so its wrong-password sign-ins can lock that user out for a
minute (the per-user sign-in limit). Then the thread moves on to a new
user.

The routes that ask for the password again (password change, account
deletion) would only ever see a wrong one: in every other valid request
to each, the hooks put the right one in, so their success is attacked
too. The user is then gone or has another password, and the next request
signs up a new one.

Passwords are bounded in bytes (8 to 72 of UTF-8, bcrypt's limit), which a
JSON schema cannot say: it counts characters. Bodies whose password has at
most 72 characters but more than 72 bytes are valid to the schema and
refused by the service, and those with fewer than 8 characters but at
least 8 bytes are invalid to the schema and accepted by the service, so
both are left out rather than judged.
"""

import itertools
import os
import secrets
import threading

import requests
import schemathesis

BASE = os.environ["TOLLGATE_URL"]
SERVICE_SECRET = os.environ["TOLLGATE_INTROSPECTION_SECRET"]
SERVICE_ROUTES = {"/api/v1/auth/introspect", "/validateToken"}
# The member that carries the current password, by operation.
PASSWORD_CHECKS = {
    ("POST", "/api/v1/auth/password"): "current_password",
    ("DELETE", "/api/v1/users/me"): "password",
}
PASSWORD_MEMBERS = ("password", "current_password", "new_password")
MIN_PASSWORD_BYTES, MAX_PASSWORD_BYTES = 8, 72


class User:
    """A throw-away account a thread signs in as."""

    def __init__(self):
        self.username = "fuzz-" + secrets.token_hex(6)
        self.password = secrets.token_urlsafe(18)
        answer = requests.post(
            f"{BASE}/api/v1/auth/signup",
            json={"username": self.username, "password": self.password},
            timeout=30,
        )
        if answer.status_code != 201:
            raise RuntimeError(f"sign-up failed: {answer.status_code} {answer.text}")

    def sign_in(self):
        return requests.post(
            f"{BASE}/api/v1/auth/signin",
            json={"username": self.username, "password": self.password},
            timeout=30,
        )


class Thread(threading.local):
    """What one worker thread signs in as, and whose turn it is to send
    the right password to each route that checks it. Counters, not
    `random`, which Hypothesis wants kept out of generation."""

    def __init__(self):
        self.user = None
        self.right_password_turn = {
            operation: itertools.cycle([True, False]) for operation in PASSWORD_CHECKS
        }


thread = Thread()


@schemathesis.auth(refresh_interval=None)
class FreshToken:
    def get(self, case, ctx):
        for _ in range(3):
            if thread.user is None:
                thread.user = User()
            answer = thread.user.sign_in()
            if answer.status_code == 200:
                return answer.json()["access_token"]
            # Locked out (429), deleted or its password changed (401).
            thread.user = None
        raise RuntimeError(f"sign-in failed: {answer.status_code} {answer.text}")

    def set(self, case, data, ctx):
        credential = SERVICE_SECRET if case.operation.path in SERVICE_ROUTES else data
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {credential}"
        operation = (case.method.upper(), case.operation.path)
        member = PASSWORD_CHECKS.get(operation)
        positive = case.meta is not None and case.meta.generation.mode.is_positive
        if member and positive and isinstance(case.body, dict):
            if next(thread.right_password_turn[operation]):
                case.body[member] = thread.user.password


@schemathesis.hook
def filter_body(context, body):
    if not isinstance(body, dict):
        return True

    def ambiguous(password):
        chars, size = len(password), len(password.encode("utf-8", "surrogatepass"))
        return chars <= MAX_PASSWORD_BYTES < size or chars < MIN_PASSWORD_BYTES <= size

    return not any(
        isinstance(body.get(member), str) and ambiguous(body[member])
        for member in PASSWORD_MEMBERS
    )
