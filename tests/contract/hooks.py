"""Schemathesis hooks for Tollgate's contract run.

Authenticated routes get a fresh access token for every request, so that
routes which end sessions (sign-out, password change, account deletion)
cannot starve the rest of the run of a live token. The introspection
routes get the service credential instead.

Schemathesis reuses values it saw in answers, the token owner's username
among them, so its wrong-password sign-ins can lock that user out for a
minute (the per-user sign-in limit). Then the hooks move on to a new user.

The routes that ask for the password again (password change, account
deletion) would only ever see a wrong one: in every other valid request
to them the hooks put the right one in, so their success is attacked too.
The user is then gone or has another password, and the next request signs
up a new one.
"""

import itertools
import os
import secrets

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
# Every other valid request to them: a counter, not `random`, which
# Hypothesis wants kept out of generation.
right_password_turn = itertools.cycle([True, False])


class User:
    """A throw-away account the run signs in as."""

    def __init__(self):
        self.username = "fuzz-" + secrets.token_hex(6)
        self.password = secrets.token_urlsafe(18)
        self.sign_up()

    def sign_up(self):
        answer = requests.post(
            f"{BASE}/api/v1/auth/signup",
            json={"username": self.username, "password": self.password},
            timeout=30,
        )
        if answer.status_code not in (201, 409):
            raise RuntimeError(f"sign-up failed: {answer.status_code} {answer.text}")

    def sign_in(self):
        return requests.post(
            f"{BASE}/api/v1/auth/signin",
            json={"username": self.username, "password": self.password},
            timeout=30,
        )


user = User()


@schemathesis.auth(refresh_interval=None)
class FreshToken:
    def get(self, case, ctx):
        global user
        for _ in range(3):
            answer = user.sign_in()
            if answer.status_code == 200:
                return answer.json()["access_token"]
            # Locked out (429), deleted or its password changed (401).
            user = User()
        raise RuntimeError(f"sign-in failed: {answer.status_code} {answer.text}")

    def set(self, case, data, ctx):
        credential = SERVICE_SECRET if case.operation.path in SERVICE_ROUTES else data
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {credential}"
        member = PASSWORD_CHECKS.get((case.method.upper(), case.operation.path))
        positive = case.meta is not None and case.meta.generation.mode.is_positive
        if member and positive and isinstance(case.body, dict) and next(right_password_turn):
            case.body[member] = user.password
