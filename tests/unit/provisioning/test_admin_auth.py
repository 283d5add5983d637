"""Admin auth: argon2 hashes, lockout after N failures, login-attempt log, API tokens, roles."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from offhook.provisioning.admin_auth import (
    AdminError,
    LoginError,
    authenticate_password,
    authenticate_token,
    create_admin,
    create_api_token,
    role_allows,
)
from offhook.provisioning.db import Database
from offhook.provisioning.models import ApiToken, LoginAttempt, utcnow

PASSWORD = "a-long-enough-password"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Session]:
    database = Database(f"sqlite:///{tmp_path / 'p.db'}")
    database.migrate()
    with database.session() as session:
        yield session
    database.dispose()


def test_password_hash_is_argon2_and_login_logged(db: Session) -> None:
    user = create_admin(db, "alice", PASSWORD, "operator")
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    assert authenticate_password(db, "alice", PASSWORD, "10.0.0.1").id == user.id
    with pytest.raises(LoginError) as info:
        authenticate_password(db, "nobody", PASSWORD, "10.0.0.2")
    assert info.value.reason == "bad_credentials"
    attempts = [
        (a.username, a.ip, a.success, a.reason)
        for a in db.scalars(select(LoginAttempt).order_by(LoginAttempt.id))
    ]
    assert attempts == [
        ("alice", "10.0.0.1", True, "ok"),
        ("nobody", "10.0.0.2", False, "unknown_user"),
    ]
    with pytest.raises(AdminError, match="at least"):
        create_admin(db, "bob", "short", "admin")
    with pytest.raises(AdminError, match="unknown role"):
        create_admin(db, "bob", PASSWORD, "superuser")
    with pytest.raises(AdminError, match="already exists"):
        create_admin(db, "alice", PASSWORD, "admin")


def test_lockout_after_threshold_failures(db: Session) -> None:
    create_admin(db, "alice", PASSWORD, "admin")
    for _ in range(2):
        with pytest.raises(LoginError) as info:
            authenticate_password(db, "alice", "wrong", "ip", threshold=3)
        assert info.value.reason == "bad_credentials"
    with pytest.raises(LoginError) as info:
        authenticate_password(db, "alice", "wrong", "ip", threshold=3)
    assert info.value.reason == "locked" and info.value.locked_until is not None
    # Even the right password is refused while locked.
    with pytest.raises(LoginError) as info:
        authenticate_password(db, "alice", PASSWORD, "ip", threshold=3)
    assert info.value.reason == "locked"
    reasons = [a.reason for a in db.scalars(select(LoginAttempt).order_by(LoginAttempt.id))]
    assert reasons == ["bad_password", "bad_password", "bad_password_locked", "locked"]
    # When the lock expires, the right password works again and the counter is reset.
    user = db.scalar(select(LoginAttempt.username))
    from offhook.provisioning.models import AdminUser

    alice = db.scalar(select(AdminUser).where(AdminUser.username == user))
    alice.locked_until = utcnow() - timedelta(seconds=1)
    assert authenticate_password(db, "alice", PASSWORD, "ip", threshold=3) is alice
    assert alice.failed_attempts == 0


def test_api_tokens_and_roles(db: Session) -> None:
    user = create_admin(db, "ops", PASSWORD, "operator")
    token, row = create_api_token(db, user, "ci")
    assert token.startswith("ohk_") and token not in row.token_hash
    assert authenticate_token(db, token) is user
    assert authenticate_token(db, token + "x") is None
    assert authenticate_token(db, "not-a-token") is None
    expiring, _ = create_api_token(db, user, "old", utcnow() - timedelta(seconds=1))
    assert authenticate_token(db, expiring) is None
    db.get(ApiToken, row.id).revoked = True
    assert authenticate_token(db, token) is None
    user.disabled = True
    fresh, _ = create_api_token(db, user, "new")
    assert authenticate_token(db, fresh) is None
    assert role_allows("admin", "operator") and role_allows("operator", "read-only")
    assert not role_allows("read-only", "operator") and not role_allows("operator", "admin")
    assert not role_allows("root", "read-only")


def test_every_refusal_costs_one_hash_check(db: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown user, wrong password, locked account, right password: one argon2 verification
    each, so response times do not tell which usernames exist or which accounts are locked."""
    import offhook.provisioning.admin_auth as admin_auth

    checks: list[str] = []
    real_verify = admin_auth.verify_password

    def counting_verify(password_hash: str, password: str) -> bool:
        checks.append(password)
        return real_verify(password_hash, password)

    monkeypatch.setattr(admin_auth, "verify_password", counting_verify)
    create_admin(db, "alice", PASSWORD, "admin")
    attempts = [("nobody", "guess-1"), ("alice", "guess-2"), ("alice", "guess-3")]
    attempts += [("alice", PASSWORD), ("nobody", "guess-4")]  # alice is locked by then
    for username, password in attempts:
        before = len(checks)
        with pytest.raises(LoginError):
            authenticate_password(db, username, password, "ip", threshold=2)
        assert len(checks) == before + 1, (username, password)


def test_new_password_or_disabling_revokes_every_api_token(db: Session) -> None:
    from offhook.provisioning.admin_auth import list_api_tokens, set_disabled, set_password

    alice = create_admin(db, "alice", PASSWORD, "operator")
    bob = create_admin(db, "bob", PASSWORD, "read-only")
    first, _ = create_api_token(db, alice, "one")
    second, _ = create_api_token(db, alice, "two")
    bobs, _ = create_api_token(db, bob, "bob")
    set_password(db, alice, "another-long-password")
    assert authenticate_token(db, first) is None and authenticate_token(db, second) is None
    assert authenticate_token(db, bobs) is bob  # only that user's tokens
    assert all(t.revoked for t in list_api_tokens(db, alice))
    set_disabled(db, bob, True)
    set_disabled(db, bob, False)
    assert authenticate_token(db, bobs) is None  # enabling again does not bring it back


def test_api_token_lifetime_is_bounded_by_role(db: Session) -> None:
    viewer = create_admin(db, "viewer", PASSWORD, "read-only")
    admin = create_admin(db, "boss", PASSWORD, "admin")
    _, row = create_api_token(db, viewer)
    assert timedelta(days=29) < row.expires_at - utcnow() <= timedelta(days=30)
    with pytest.raises(AdminError, match="at most 90 days"):
        create_api_token(db, viewer, "", utcnow() + timedelta(days=91))
    create_api_token(db, admin, "", utcnow() + timedelta(days=365))
    with pytest.raises(AdminError, match="at most 365 days"):
        create_api_token(db, admin, "", utcnow() + timedelta(days=366))
    # A row from before expiry was mandatory (NULL) counts as 365 days from its creation.
    old, old_row = create_api_token(db, admin, "old")
    old_row.expires_at = None
    assert authenticate_token(db, old) is admin
    old_row.created_at = utcnow() - timedelta(days=366)
    assert authenticate_token(db, old) is None


def test_token_use_in_a_read_transaction_survives_a_concurrent_writer(tmp_path: Path) -> None:
    """A GET's deferred SQLite transaction cannot become a write once another writer has
    committed since it read ("database is locked" at once): the last-use stamp is skipped
    rather than failing the request."""
    from offhook.provisioning.models import AdminUser

    database = Database(f"sqlite:///{tmp_path / 'p.db'}")
    database.migrate()
    try:
        with database.session() as setup:
            token, _ = create_api_token(setup, create_admin(setup, "alice", PASSWORD), "ci")
        # As a GET request and a write request get them (provisioning.db.get_session).
        reader, writer = database.deferred_sessionmaker(), database.sessionmaker()
        try:
            reader.execute(select(AdminUser.id)).all()  # the read snapshot starts here
            create_admin(writer, "bob", PASSWORD)
            writer.commit()
            user = authenticate_token(reader, token)
            assert user is not None and user.username == "alice"
            reader.commit()
        finally:
            reader.close()
            writer.close()
    finally:
        database.dispose()


def test_unknown_usernames_lock_like_accounts(db: Session) -> None:
    """After ``threshold`` failures an unknown name answers "locked" too, for the same window:
    "locked" alone must not tell that an account exists."""
    create_admin(db, "alice", PASSWORD, "admin")
    for username in ("alice", "nobody"):
        reasons = []
        for _ in range(4):
            with pytest.raises(LoginError) as info:
                authenticate_password(db, username, "wrong", "ip", threshold=3)
            reasons.append(info.value.reason)
        assert reasons == ["bad_credentials", "bad_credentials", "locked", "locked"], username
    logged = [a.reason for a in db.scalars(select(LoginAttempt).order_by(LoginAttempt.id))]
    # The failure that locks counts; the one during the lock does not (as for an account).
    assert logged[-4:] == ["unknown_user"] * 3 + ["unknown_user_locked"]
