"""identity.registration: the in-process module's check_registration_for_spam refuses a client's
registration other than through the configured SSO providers, from a replica field the bot sets
from its config (issue 10 review, break R)."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from bot.policy import PolicyState
from bot.replica.changelog import ChangeLog
from bot.replica.protocol import apply_change, apply_snapshot, snapshot
from bot.synapse.judge import registration_refusal
from tests.unit.test_synapse_module import make_state, module

BROWSER = [("Mozilla/5.0", "203.0.113.7")]  # what Synapse passes for a client's registration


def config(**identity):
    from bot.config import Settings

    return Settings.model_validate({
        "homeserver": {"url": "http://127.0.0.1:8008", "user_id": "@bot:hs.test", "password": "secret-password"},
        "gate": {"listen": "127.0.0.1:8765", "token": "t" * 24},
        "moderators": ["@mod:hs.test"], "protected_rooms": ["!room:hs.test"], "identity": identity})


def test_registration_is_open_by_default_and_sso_only_names_the_providers():
    assert config().identity.registration_providers() is None
    sso = config(registration="sso_only", sso_providers=["oidc-gov"])
    assert sso.identity.registration_providers() == frozenset({"oidc-gov"})


def test_sso_only_without_providers_is_refused_naming_the_key():
    with pytest.raises(ValidationError, match="registration 'sso_only' needs identity.sso_providers"):
        config(registration="sso_only")
    with pytest.raises(ValidationError, match="registration"):
        config(registration="closed")


def test_the_field_travels_to_a_replica():
    state = PolicyState(bot_user_id="@bot:hs.test", server_name="hs.test", agreement_version="1")
    log = ChangeLog(state)
    replica = apply_snapshot(snapshot(state, log.epoch, log.seq))
    assert replica.registration_only_through is None
    state.registration_only_through = frozenset({"oidc-gov"})
    for record in log.since(0, 100):
        apply_change(replica, record)
    assert replica.registration_only_through == frozenset({"oidc-gov"})


def test_sso_only_refuses_a_password_or_other_provider_registration_by_a_client():
    state = make_state()
    assert registration_refusal(state, None, BROWSER) is None  # open
    state.registration_only_through = frozenset({"oidc-gov"})
    assert registration_refusal(state, "oidc-gov", BROWSER) is None
    assert registration_refusal(state, None, BROWSER) == (
        "registration with a password refused: identity.registration is 'sso_only' (allowed: oidc-gov)")
    assert registration_refusal(state, "github", BROWSER) == (
        "registration through 'github' refused: identity.registration is 'sso_only' (allowed: oidc-gov)")
    # The admin API and shared-secret registration pass no client's user agent: an admin's account.
    assert registration_refusal(state, None, []) is None


async def test_the_module_denies_it_and_logs_why(caplog):
    from synapse.spam_checker_api import RegistrationBehaviour

    rules = module()
    assert "check_registration_for_spam" in rules.api.callbacks
    state = make_state()
    state.registration_only_through = frozenset({"oidc-gov"})
    rules.replica.state, rules.replica.epoch, rules.replica.last_success = state, "e1", 0.0
    with caplog.at_level(logging.INFO, logger="bot.synapse.module"):
        refused = await rules.check_registration_for_spam(None, "mallory", BROWSER, None)
    assert refused is RegistrationBehaviour.DENY
    assert "registration with a password refused: identity.registration is 'sso_only'" in caplog.text
    assert "'mallory'" in caplog.text
    assert await rules.check_registration_for_spam(None, "alice", BROWSER, "oidc-gov") is RegistrationBehaviour.ALLOW


async def test_before_the_first_snapshot_registration_follows_fail(caplog):
    from synapse.spam_checker_api import RegistrationBehaviour

    assert await module().check_registration_for_spam(None, "a", BROWSER, None) is RegistrationBehaviour.ALLOW
    closed = module(fail={"check_registration_for_spam": "closed"})
    with caplog.at_level(logging.WARNING, logger="bot.synapse.module"):
        assert await closed.check_registration_for_spam(None, "a", BROWSER, None) is RegistrationBehaviour.DENY
    assert "registration of 'a' refused: no current replica to decide from" in caplog.text
