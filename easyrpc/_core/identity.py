"""Who is calling and what they may call: the rules, without I/O (issue #26).

An authenticated connection has an *identity*: the client id its token proved (the
``id`` claim, checked against that id's own secret, ``docs/protocol.md`` §4.2), else the
subject (CN) of the TLS client certificate the server verified, else none (a client
that proved the shared secret only).

What an identity may call is an :class:`Access`: namespaces, and functions by name or
by a tag given at registration. A function outside it is, for that connection, a
function that does not exist: it is not listed, and a call to it gets the same
``FunctionNotFound`` as an unknown name.

Through a chain, a connection's identity is the relaying server's. A relay may name the
caller it relays for in the call metadata (:data:`ON_BEHALF_OF`); the receiving server
believes it only from a relay it trusts for that (:func:`caller_identity`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Access", "ALL", "NOTHING", "ON_BEHALF_OF", "ANY_IDENTITY", "ServerKeys", "access_for", "caller_allowed",
           "caller_identity", "on_behalf_of", "check_client_id", "subject_of", "valid_client_id"]

ON_BEHALF_OF = "easyrpc-on-behalf-of"  # the metadata key a trusted relay names its caller with
ANY_IDENTITY = "*"  # in an access map: every identity not listed (the shared secret's too)
_MAX_ID = 128


def valid_client_id(client_id: object) -> bool:
    """A client id: 1 to 128 printable characters, no whitespace at either end."""
    return (isinstance(client_id, str) and 0 < len(client_id) <= _MAX_ID and client_id.isprintable()
            and client_id == client_id.strip() and client_id != ANY_IDENTITY)


def check_client_id(client_id: object) -> str:
    """*client_id* if valid, else ValueError (a configuration mistake, said at once)."""
    if not valid_client_id(client_id):
        raise ValueError(f"a client id must be 1 to {_MAX_ID} printable characters (not '*'), not {client_id!r}")
    assert isinstance(client_id, str)
    return client_id


def _names(value: Iterable[str] | str | None, what: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):  # Access(tags='read') means {'read'}, not {'r', 'e', 'a', 'd'}
        value = (value,)
    names = frozenset(value)
    if not all(isinstance(n, str) and n for n in names):
        raise TypeError(f"Access {what} must be non-empty strings")
    return names


@dataclass(frozen=True, slots=True, init=False)
class Access:
    """What one identity may call.

    Args:
        namespaces: the namespaces whose functions it may call (through a namespace
            group: the group's name, or the namespace a function comes from); ``None``: any.
        functions: function names it may call; with *tags*, a function is allowed if
            either allows it. Both ``None``: every function (of the allowed namespaces).
        tags: tags (given at registration, ``origin(tags={...})``) that allow a function.

    ``Access()`` allows everything; ``Access(functions=())`` nothing but the builtin
    ``get_registered_functions`` (which lists what is allowed).
    """

    namespaces: frozenset[str] | None
    functions: frozenset[str] | None
    tags: frozenset[str] | None

    def __init__(self, *, namespaces: Iterable[str] | str | None = None, functions: Iterable[str] | str | None = None,
                 tags: Iterable[str] | str | None = None) -> None:
        object.__setattr__(self, "namespaces", _names(namespaces, "namespaces"))
        object.__setattr__(self, "functions", _names(functions, "functions"))
        object.__setattr__(self, "tags", _names(tags, "tags"))

    def allows(self, namespace: str, name: str, tags: Collection[str] = (), group: str | None = None) -> bool:
        """Whether a function *name* of *namespace* (tagged *tags*) may be called, by a
        connection of *group* (a namespace group, or the namespace itself)."""
        if self.namespaces is not None and namespace not in self.namespaces and group not in self.namespaces:
            return False
        if self.functions is None and self.tags is None:
            return True
        return ((self.functions is not None and name in self.functions)
                or (self.tags is not None and not self.tags.isdisjoint(tags)))


ALL = Access()
NOTHING = Access(functions=())


def access_for(policy: Mapping[str, Access] | None, identity: str | None) -> Access | None:
    """The :class:`Access` of *identity* under *policy* (None: no policy, everything).

    With a policy, an identity it does not list gets its ``'*'`` entry, or nothing."""
    if policy is None:
        return None
    if identity is not None and identity in policy:
        return policy[identity]
    return policy.get(ANY_IDENTITY, NOTHING)


def caller_identity(identity: str | None, metadata: Mapping[str, str] | None,
                    trusted_relays: Collection[str]) -> tuple[str | None, str | None]:
    """Who a call is for: ``(caller, relay)``.

    *identity* is the connection's. If it is a relay trusted for it and the call names
    the caller it relays for (:data:`ON_BEHALF_OF`), the caller is that one and *relay*
    the connection's identity; otherwise the caller is the connection's identity (a
    name from anyone else is ignored) and *relay* None."""
    if metadata and identity is not None and identity in trusted_relays:
        named = metadata.get(ON_BEHALF_OF)
        if valid_client_id(named):
            return named, identity
    return identity, None


def on_behalf_of(metadata: Mapping[str, str] | None, caller: str | None) -> dict[str, str] | None:
    """The metadata a relay sends on for a call made by *caller* (None: the caller has
    no identity): naming that caller, whatever the call's own metadata claimed."""
    if caller is None:
        if not metadata or ON_BEHALF_OF not in metadata:
            return dict(metadata) if metadata else None
        return {k: v for k, v in metadata.items() if k != ON_BEHALF_OF} or None
    return {**metadata, ON_BEHALF_OF: caller} if metadata else {ON_BEHALF_OF: caller}


def caller_allowed(policy: Mapping[str, Access] | None, identity: str | None, metadata: Mapping[str, str] | None,
                   trusted_relays: Collection[str], namespace: str, reg: Any) -> bool:
    """Whether the caller a trusted relay names (if any) may call *reg* (a registration:
    ``name``, ``namespace``, ``tags``) through a connection of *namespace*; the
    connection's own access has allowed it already."""
    caller, relay = caller_identity(identity, metadata, trusted_relays)
    if relay is None or policy is None:
        return True
    access = access_for(policy, caller)
    return access is None or access.allows(reg.namespace, reg.name, reg.tags, namespace)


def subject_of(cert: Mapping[str, Any] | None) -> str | None:
    """The subject's common name (CN) of a peer certificate as ``SSLSocket.getpeercert()``
    gives it (None: no certificate, or no valid CN)."""
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and valid_client_id(value):
                return str(value)
    return None


class ServerKeys(Protocol):
    """A server's keys: find the secret a client token claims and verify the token."""

    def verify(self, token: str, server_nonce: str, peer_identity: str | None) -> tuple[dict[str, Any], Any, str | None]:
        """``(claims, credentials, identity)``: the token's claims, the credentials that
        verified it (for the proof and the frame keys), the identity it proves.
        :class:`~easyrpc.exceptions.AuthenticationError` (saying nothing more) if it does
        not verify, names an unknown or revoked id, or names none where no shared secret
        is accepted."""
        ...
