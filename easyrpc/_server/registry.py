"""What a server offers: its functions by namespace, namespace groups, and what its links
to other servers offer; and, for each namespace a connection may use, the view of it.

Views are built once and read without a lock (every call looks one up); any change
drops them. Precedence in a view: local functions, in the group's member order, then
each link's, in the order the links were made; a shadowed name is logged, never silent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._convert import Plan, plan_for
from .._core.identity import Access
from .._signature import callable_kind, describe_function, is_identifier
from .._typeinfo import add_types
from .tasks import CallPace

if TYPE_CHECKING:
    from .._links import ServerLink

__all__ = ["BUILTIN_LIST", "Registered", "Registry"]

BUILTIN_LIST = "get_registered_functions"


def _get_registered_functions() -> list[dict[str, Any]]:
    """Each function offered to this connection: name, namespace, signature and docstring."""
    raise NotImplementedError  # answered by the connection itself; this only describes it


@dataclass(frozen=True)
class Registered:
    """One function as served in one namespace."""

    name: str
    namespace: str
    func: Callable[..., Any]
    kind: str  # "sync", "async", "gen", "agen", "builtin", "remote", "remote_gen"
    description: dict[str, Any]
    link: ServerLink | None = None  # for functions forwarded from another server
    pace: CallPace = field(default_factory=CallPace, compare=False, repr=False)  # plain functions' run times
    plan: Plan | None = field(default=None, compare=False, repr=False)  # how its arguments are converted
    tags: frozenset[str] = frozenset()  # given at registration: what an Access may allow it by


def _relay_marker(*args: Any, **kwargs: Any) -> Any:
    """Stands for a function served by another server (calls go through its link)."""
    raise RuntimeError("forwarded functions are called through their link")


def _relay_stream(link: ServerLink, name: str) -> Callable[..., Any]:
    def relay(*args: Any, **kwargs: Any) -> Any:
        return link.stream(name, list(args), kwargs)

    return relay


def _same_offer(old: dict[str, Registered], new: dict[str, Registered]) -> bool:
    return old.keys() == new.keys() and all(old[k].description == new[k].description for k in old)


def _origin_of(reg: Registered) -> str:
    return f"link {reg.link.url}" if reg.link is not None else f"namespace {reg.namespace}"


class Registry:
    """One server's offer (thread-safe)."""

    def __init__(self, server_id: str, log: logging.Logger) -> None:
        self._server_id = server_id
        self._log = log
        self._lock = threading.Lock()
        self._namespaces: dict[str, dict[str, Registered]] = {}
        self._groups: dict[str, tuple[str, ...]] = {}
        self._views: dict[Any, dict[str, Registered]] = {}  # by namespace, or (namespace, Access)
        self._links: dict[ServerLink, dict[str, Registered]] = {}  # in creation order

    def register(self, func: Callable[..., Any], namespace: str, name: str | None, tags: frozenset[str] = frozenset()) -> str:
        """Register *func* under *name* (default: its ``__name__``) in *namespace*, tagged
        *tags*; the name."""
        name = name or getattr(func, "__name__", "")
        if not isinstance(name, str) or not is_identifier(name):
            raise ValueError(f"function name must be a plain identifier, not {name!r}")
        if name == BUILTIN_LIST:
            raise ValueError(f"{BUILTIN_LIST} is a builtin and cannot be replaced")
        if not isinstance(namespace, str) or not namespace or len(namespace) > 200:
            raise ValueError("namespace must be a non-empty string")
        desc = describe_function(func, name, namespace)
        add_types(desc, func)
        desc["route"] = [self._server_id]
        reg = Registered(name, namespace, func, callable_kind(func), desc, plan=plan_for(func, name), tags=tags)
        with self._lock:
            if namespace in self._groups:
                raise ValueError(f"{namespace!r} is a namespace group")
            self._namespaces.setdefault(namespace, {})[name] = reg
            self._views.clear()
        return name

    def create_group(self, group: str, namespaces: tuple[str, ...]) -> None:
        """Offer the union of *namespaces* under the name *group*."""
        if not namespaces:
            raise ValueError("a namespace group needs at least one namespace")
        with self._lock:
            if group in self._namespaces:
                raise ValueError(f"{group!r} is already a namespace")
            self._groups[group] = tuple(namespaces)
            self._views.clear()

    def sees(self, namespace: str, changed: str) -> bool:
        """True if a connection of *namespace* sees a change to namespace *changed*."""
        return namespace == changed or changed in self._groups.get(namespace, ())

    def functions_for(self, namespace: str, access: Access | None = None) -> dict[str, Registered]:
        """The functions a connection of *namespace* (a namespace or group) may call, with
        *access* (None: all of them)."""
        if access is not None:
            return self._allowed(namespace, access)
        view = self._views.get(namespace)  # every call looks: no lock once built
        if view is not None:
            return view
        with self._lock:
            view = self._views.get(namespace)
            if view is not None:
                return view
            view = {}
            members = self._groups.get(namespace, (namespace,))
            sources = [self._namespaces.get(m, {}) for m in members] + [
                {n: r for n, r in funcs.items() if r.namespace in members} for funcs in self._links.values()]
            for source in sources:
                for fname, reg in source.items():
                    if fname in view:
                        if view[fname].func is not reg.func:
                            self._log.warning("namespace %s: %s from %s is shadowed by %s", namespace, fname,
                                              _origin_of(reg), _origin_of(view[fname]))
                        continue
                    view[fname] = reg
            view[BUILTIN_LIST] = Registered(
                BUILTIN_LIST, namespace, _get_registered_functions, "builtin",
                describe_function(_get_registered_functions, BUILTIN_LIST, namespace))
            self._views[namespace] = view
            return view

    def _allowed(self, namespace: str, access: Access) -> dict[str, Registered]:
        key = (namespace, access)
        view = self._views.get(key)
        if view is not None:
            return view
        whole = self.functions_for(namespace)
        view = {n: r for n, r in whole.items() if r.kind == "builtin" or access.allows(r.namespace, n, r.tags, namespace)}
        with self._lock:
            if self._views.get(namespace) is whole:  # not changed meanwhile: keep it
                self._views[key] = view
        return view

    # --- links --------------------------------------------------------------------------
    def add_link(self, link: ServerLink) -> None:
        with self._lock:
            self._links[link] = {}

    def take_links(self) -> list[ServerLink]:
        """Forget every link and what it offers (the server is closing); the links."""
        with self._lock:
            links = list(self._links)
            self._links.clear()
            self._views.clear()
        return links

    def set_forwarded(self, link: ServerLink, offered: dict[str, dict[str, Any]]) -> bool:
        """Replace the functions *link* offers; True if that changed anything."""
        ns = link.local_namespace
        entries: dict[str, Registered] = {}
        for fname, desc in offered.items():
            if desc.get("kind") == "generator":
                entries[fname] = Registered(fname, ns, _relay_stream(link, fname), "remote_gen", desc, link)
            else:
                entries[fname] = Registered(fname, ns, _relay_marker, "remote", desc, link)
        with self._lock:
            if link not in self._links:
                return False  # closed meanwhile
            if _same_offer(self._links[link], entries):
                return False
            self._links[link] = entries
            self._views.clear()
        return True
