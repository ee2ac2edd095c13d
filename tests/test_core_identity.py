"""The identity rules without sockets (issue #26): what an Access allows, whose call a
relayed one is, a certificate's subject, and the handshake choosing a secret by id."""

from __future__ import annotations

from typing import Any

import pytest

from easyrpc._core.handshake import Authenticated, ClientHandshake, Opened, Refused, SendAuth, ServerHandshake
from easyrpc._core.identity import (
    NOTHING,
    ON_BEHALF_OF,
    Access,
    access_for,
    caller_allowed,
    caller_identity,
    on_behalf_of,
    subject_of,
    valid_client_id,
)
from easyrpc._handshake import Secret, claimed_id, new_nonce
from easyrpc._server.access import Keyring
from easyrpc.exceptions import AuthenticationError

T0 = 1000.0
KEYS = {"reporting": "k-reporting", "admin": "k-admin"}


# --- Access ----------------------------------------------------------------------------------
def test_an_empty_access_allows_everything() -> None:
    assert Access().allows("any", "f") and Access().allows("x", "g", {"t"})


def test_access_by_namespace_function_and_tag() -> None:
    """Namespaces limit first; then a function is allowed by its name or one of its tags."""
    a = Access(namespaces={"DEFAULT"}, functions={"ping"}, tags={"read"})
    assert a.allows("DEFAULT", "ping")
    assert a.allows("DEFAULT", "report", {"read", "slow"})
    assert not a.allows("DEFAULT", "drop", {"admin"})
    assert not a.allows("admin", "ping")  # outside its namespaces, even by name
    assert Access(namespaces="DEFAULT").allows("DEFAULT", "anything")
    assert not NOTHING.allows("DEFAULT", "ping")


def test_through_a_group_the_group_name_or_the_member_namespace_allows() -> None:
    a = Access(namespaces={"all"})
    assert a.allows("left", "f", group="all") and not a.allows("left", "f", group="left")
    assert Access(namespaces={"left"}).allows("left", "f", group="all")


def test_a_string_is_one_name_not_its_letters() -> None:
    assert Access(tags="read").tags == frozenset({"read"})
    with pytest.raises(TypeError):
        Access(functions=["ok", ""])


def test_access_is_hashable_and_immutable() -> None:
    assert Access(tags={"a"}) == Access(tags=["a"]) and hash(Access(tags={"a"})) == hash(Access(tags=("a",)))
    with pytest.raises(AttributeError):
        Access().tags = frozenset()  # type: ignore[misc]


def test_access_for_an_identity() -> None:
    """No policy: everything (None). A policy: the identity's entry, else '*', else nothing."""
    read = Access(tags={"read"})
    assert access_for(None, "x") is None
    assert access_for({"r": read}, "r") is read
    assert access_for({"r": read}, "other") == NOTHING
    assert access_for({"r": read}, None) == NOTHING
    assert access_for({"r": read, "*": Access()}, None) == Access()


# --- relays ----------------------------------------------------------------------------------
def test_a_trusted_relay_names_the_caller() -> None:
    assert caller_identity("gateway", {ON_BEHALF_OF: "alice"}, {"gateway"}) == ("alice", "gateway")


@pytest.mark.parametrize("identity, metadata, trusted", [
    ("rogue", {ON_BEHALF_OF: "alice"}, {"gateway"}),  # an untrusted relay
    (None, {ON_BEHALF_OF: "alice"}, {"gateway"}),  # the shared secret's connection
    ("gateway", {ON_BEHALF_OF: " bad id"}, {"gateway"}),  # not a valid id
    ("gateway", {}, {"gateway"}),  # a trusted relay calling for itself
])
def test_a_name_from_anyone_else_is_ignored(identity: Any, metadata: dict[str, str], trusted: set[str]) -> None:
    assert caller_identity(identity, metadata, trusted) == (identity, None)


def test_a_relay_names_its_caller_whatever_the_call_claimed() -> None:
    assert on_behalf_of(None, "alice") == {ON_BEHALF_OF: "alice"}
    assert on_behalf_of({"a": "1", ON_BEHALF_OF: "mallory"}, "alice") == {"a": "1", ON_BEHALF_OF: "alice"}
    assert on_behalf_of({"a": "1", ON_BEHALF_OF: "mallory"}, None) == {"a": "1"}
    assert on_behalf_of({ON_BEHALF_OF: "mallory"}, None) is None
    assert on_behalf_of(None, None) is None


def test_the_caller_a_trusted_relay_names_must_be_allowed_too() -> None:
    class Reg:
        name, namespace, tags = "wipe", "DEFAULT", frozenset({"admin"})

    policy = {"gateway": Access(), "alice": Access(tags={"read"}), "root": Access()}
    named = {ON_BEHALF_OF: "alice"}
    assert not caller_allowed(policy, "gateway", named, {"gateway"}, "DEFAULT", Reg())
    assert caller_allowed(policy, "gateway", {ON_BEHALF_OF: "root"}, {"gateway"}, "DEFAULT", Reg())
    assert caller_allowed(policy, "gateway", None, {"gateway"}, "DEFAULT", Reg())  # for itself
    assert caller_allowed(policy, "rogue", named, {"gateway"}, "DEFAULT", Reg())  # untrusted: its name is ignored
    assert caller_allowed(None, "gateway", named, {"gateway"}, "DEFAULT", Reg())  # no policy


# --- ids and certificates --------------------------------------------------------------------
@pytest.mark.parametrize("value, ok", [("reporting", True), ("svc.a-1@x", True), ("", False), ("*", False),
                                       (" a", False), ("a\n", False), ("x" * 129, False), (7, False), (None, False)])
def test_valid_client_ids(value: Any, ok: bool) -> None:
    assert valid_client_id(value) is ok


def test_the_subject_of_a_certificate_is_its_common_name() -> None:
    cert = {"subject": ((("countryName", "FR"),), (("commonName", "reporting-job"),))}
    assert subject_of(cert) == "reporting-job"
    assert subject_of({"subject": ((("organizationName", "x"),),)}) is None
    assert subject_of(None) is None and subject_of({}) is None


# --- the handshake choosing a secret by id ----------------------------------------------------
def _shake(keys: Keyring, secret: str, client_id: str | None, peer_identity: str | None = None,
           encryption: bool = False) -> tuple[Any, ServerHandshake, ClientHandshake]:
    server = ServerHandshake(None, encryption, 10.0, T0, keys=keys, peer_identity=peer_identity)
    client = ClientHandshake(Secret(secret), "DEFAULT", encryption, client_id)
    auth = client.receive(server.hello)
    assert isinstance(auth, SendAuth)
    return server.receive(auth.payload, T0 + 0.1), server, client


def test_a_client_id_picks_the_secret_and_is_the_identity() -> None:
    """The welcome's proof and the frame keys use the id's secret: the client accepts them."""
    event, server, client = _shake(Keyring(None, KEYS), "k-reporting", "reporting", encryption=True)
    assert isinstance(event, Authenticated) and event.identity == "reporting" == server.identity
    opened = client.receive(server.welcome([]))
    assert isinstance(opened, Opened) and opened.cipher is not None
    server_cipher = server.cipher()
    assert server_cipher is not None and opened.cipher.open(server_cipher.seal(b"hi")) == b"hi"


@pytest.mark.parametrize("secret, client_id", [("k-admin", "reporting"), ("k-reporting", "nobody"),
                                               ("shared", None), ("k-reporting", "*")])
def test_every_bad_credential_is_the_same_refusal(secret: str, client_id: str | None) -> None:
    """A wrong secret, an unknown id, no id without a shared secret: code auth, nothing more."""
    event, _, _ = _shake(Keyring(None, KEYS), secret, client_id)
    assert event == Refused("auth", "authentication failed")


def test_the_shared_secret_and_the_certificate_subject() -> None:
    """No id: the shared secret proves it, and the identity is the certificate's subject (if any)."""
    keys = Keyring("shared", KEYS)
    event, _, _ = _shake(keys, "shared", None)
    assert isinstance(event, Authenticated) and event.identity is None
    event, _, _ = _shake(keys, "shared", None, peer_identity="cert-subject")
    assert isinstance(event, Authenticated) and event.identity == "cert-subject"
    event, _, _ = _shake(keys, "k-admin", "admin", peer_identity="cert-subject")  # an id proved wins
    assert isinstance(event, Authenticated) and event.identity == "admin"


def test_a_revoked_certificate_subject_is_refused() -> None:
    keys = Keyring("shared", KEYS)
    keys.revoke("cert-subject")
    assert _shake(keys, "shared", None, peer_identity="cert-subject")[0] == Refused("auth", "authentication failed")
    assert isinstance(_shake(keys, "shared", None, peer_identity="other")[0], Authenticated)


def test_revoked_then_added_again() -> None:
    keys = Keyring(None, KEYS)
    keys.revoke("reporting")
    assert _shake(keys, "k-reporting", "reporting")[0] == Refused("auth", "authentication failed")
    keys.add("reporting", "k-new")
    assert _shake(keys, "k-reporting", "reporting")[0] == Refused("auth", "authentication failed")
    assert isinstance(_shake(keys, "k-new", "reporting")[0], Authenticated)


def test_a_lookup_is_asked_at_each_handshake_and_may_fail() -> None:
    table: dict[str, str] = {"job": "k-job"}
    asked: list[str] = []

    def lookup(client_id: str) -> str | None:
        asked.append(client_id)
        if client_id == "boom":
            raise RuntimeError("database down")
        return table.get(client_id)

    keys = Keyring(None, lookup)
    assert isinstance(_shake(keys, "k-job", "job")[0], Authenticated)
    del table["job"]
    assert _shake(keys, "k-job", "job")[0] == Refused("auth", "authentication failed")
    assert _shake(keys, "k-job", "boom")[0] == Refused("auth", "authentication failed")
    assert asked == ["job", "job", "boom"]


def test_a_keyring_needs_a_key_and_valid_ids() -> None:
    with pytest.raises(ValueError):
        Keyring(None, None)
    with pytest.raises(ValueError):
        Keyring(None, {"": "k"})


def test_the_id_claim_is_read_before_verifying() -> None:
    token = Secret("s").client_token(new_nonce(), new_nonce(), "DEFAULT", False, "reporting")
    assert claimed_id(token) == "reporting"
    assert claimed_id(Secret("s").client_token(new_nonce(), new_nonce(), "DEFAULT", False)) is None
    assert claimed_id("not a token") is None
    with pytest.raises(AuthenticationError):  # naming an id is no proof of it
        Keyring(None, KEYS).verify(token, new_nonce(), None)
