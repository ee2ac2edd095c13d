"""A server's identities: its keys (the shared secret and each client id's), what each
identity may call, the relays it trusts, and revocation (issue #26).

The rules (what an :class:`~easyrpc._core.identity.Access` allows, who a relayed call is
for) are :mod:`easyrpc._core.identity`'s; the token checks :mod:`easyrpc._handshake`'s.
This module keeps the server's state of them and closes revoked identities' connections.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, Union

from .._core.close_codes import REVOKED
from .._core.identity import Access, access_for, caller_allowed, check_client_id, valid_client_id
from .._handshake import Secret, claimed_id
from ..exceptions import AuthenticationError

if TYPE_CHECKING:
    from .connection import ServerConnection

__all__ = ["CredentialLookup", "Credentials", "Identities", "Keyring"]

CredentialLookup = Callable[[str], Union[str, bytes, None]]
Credentials = Union[Mapping[str, Union[str, bytes]], CredentialLookup]

_DECOY = Secret(os.urandom(32))  # checks the token of an unknown id: refused as a wrong secret is, as slowly
_log = logging.getLogger("easyrpc.server")


class Keyring:
    """The secrets a server accepts: the shared one (optional) and each client id's, from
    a table or a lookup called at each handshake; revoked ids are refused (thread-safe)."""

    def __init__(self, shared: str | bytes | None, credentials: Credentials | None) -> None:
        self._shared = None if shared is None else Secret(shared)
        self._lock = threading.Lock()
        self._lookup: CredentialLookup | None = None
        self._table: dict[str, Secret] = {}
        if callable(credentials):
            self._lookup = credentials
        elif credentials is not None:
            self._table = {check_client_id(k): Secret(v) for k, v in credentials.items()}
        elif shared is None:
            raise ValueError("a server needs server_secret, credentials, or both")
        self._revoked: set[str] = set()

    @property
    def shared(self) -> Secret | None:
        return self._shared

    def secret_for(self, client_id: str) -> Secret | None:
        """The secret of *client_id* (None: unknown or revoked)."""
        with self._lock:
            if client_id in self._revoked:
                return None
            secret = self._table.get(client_id)
        if secret is not None or self._lookup is None:
            return secret
        try:
            raw = self._lookup(client_id)
        except Exception:  # noqa: BLE001 - the application's lookup failing refuses that client, no more
            _log.exception("the credentials lookup failed")
            return None
        if raw is None:
            return None
        return raw if isinstance(raw, Secret) else Secret(raw)

    def verify(self, token: str, server_nonce: str, peer_identity: str | None) -> tuple[dict[str, Any], Secret, str | None]:
        """(``_core.identity.ServerKeys``.) The claims, the secret that verified them and the identity."""
        named = claimed_id(token)
        if named is None:
            if self._shared is None or (peer_identity is not None and self.revoked(peer_identity)):
                _refuse(token, server_nonce)
            assert self._shared is not None
            return self._shared.check_client_token(token, server_nonce), self._shared, peer_identity
        secret = self.secret_for(named) if isinstance(named, str) and valid_client_id(named) else None
        if secret is None:
            _refuse(token, server_nonce)
        assert isinstance(named, str) and secret is not None
        claims = secret.check_client_token(token, server_nonce)
        return claims, secret, named

    def revoked(self, identity: str | None) -> bool:
        """Whether *identity* (a client id or a certificate's subject) has been revoked."""
        with self._lock:
            return identity in self._revoked

    def add(self, client_id: str, secret: str | bytes) -> None:
        """Accept *client_id* with *secret* from now on (a new key, or a rotated one)."""
        key = Secret(secret)
        with self._lock:
            self._table[check_client_id(client_id)] = key
            self._revoked.discard(client_id)

    def revoke(self, client_id: str) -> None:
        """Refuse *client_id* (a client id, or a certificate subject) from now on (until
        :meth:`add` accepts it again)."""
        with self._lock:
            self._table.pop(client_id, None)
            self._revoked.add(client_id)


def _refuse(token: str, server_nonce: str) -> NoReturn:
    try:
        _DECOY.check_client_token(token, server_nonce)
    except AuthenticationError:
        pass
    raise AuthenticationError("authentication failed")


class Identities:
    """The identity half of :class:`~easyrpc.server.EasyRpcServer` (a base class)."""

    # what the server provides
    _lock: threading.Lock
    _connections: set[ServerConnection]
    log: logging.Logger

    def _init_identities(self, server_secret: str | bytes | None, credentials: Credentials | None,
                         access: Mapping[str, Access] | None, trusted_relays: Collection[str]) -> None:
        self.keys = Keyring(server_secret, credentials)
        if access is not None:
            if not all(isinstance(a, Access) for a in access.values()):
                raise TypeError("access maps identities to easyrpc.server.Access objects")
            access = dict(access)
        self._access = access
        relays = frozenset([trusted_relays] if isinstance(trusted_relays, str) else trusted_relays)
        self.trusted_relays = frozenset(check_client_id(r) for r in relays)

    def access_of(self, identity: str | None) -> Access | None:
        """What *identity* may call (None: everything; there is no access policy)."""
        return access_for(self._access, identity)

    def caller_check(self, identity: str | None, namespace: str) -> Callable[[Any, Any], bool] | None:
        """For a connection of *identity* and *namespace*: None, or (a trusted relay, under
        an access policy) the check that the caller it names for a call may call that
        function (``check(call, registration)``)."""
        if identity is None or identity not in self.trusted_relays or self._access is None:
            return None
        policy, relays = self._access, self.trusted_relays

        def check(msg: Any, reg: Any) -> bool:
            return caller_allowed(policy, identity, msg.metadata, relays, namespace, reg)

        return check

    def add_credential(self, client_id: str, secret: str | bytes) -> None:
        """Accept *client_id* proving *secret* from now on (a new client, or its key
        rotated: its open connections stay). Undoes :meth:`revoke`."""
        self.keys.add(client_id, secret)
        self.log.info("credential %s added", client_id)

    def revoke(self, client_id: str) -> int:
        """Refuse *client_id* (a client id, or a TLS client certificate's subject) from now
        on and close its open connections; their number."""
        self.keys.revoke(client_id)
        closed = self.disconnect(client_id)
        self.log.warning("credential %s revoked; %d connections closed", client_id, closed)
        return closed

    def disconnect(self, identity: str) -> int:
        """Close the open connections of *identity* (a client id or certificate subject),
        telling each proxy why; their number. (With a credentials lookup, make it return
        None for that id first, or the proxies reconnect.)"""
        with self._lock:
            conns = [c for c in self._connections if c.identity == identity]
        for conn in conns:
            conn.close(*REVOKED, bye=REVOKED.reason)
        return len(conns)
