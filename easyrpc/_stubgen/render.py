"""The typed module ``easyrpc stubgen`` writes: the named types, then one ``Protocol`` for
the blocking proxy and one for ``easyrpc.aio``, from a server's function descriptions."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from typing import Any

from .._signature import is_identifier
from .._typeinfo import BUILTIN_TYPES, MAX_TYPES
from .exprs import ITERATORS, comment_text, doc_literal, parse_type, render_value

__all__ = ["render_module", "class_name_for"]

ANY = "typing.Any"
_RESERVED = frozenset({"typing", "typing_extensions", "collections", "dataclasses", "datetime", "decimal", "enum",
                       "uuid", "builtins", "annotations"}) | BUILTIN_TYPES
_KINDS = ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD", "VAR_POSITIONAL", "KEYWORD_ONLY", "VAR_KEYWORD")
HEADER = '''"""Typed interface of an easyrpc server{where}: written by `easyrpc stubgen`.

Use it as ``EasyRpcProxy.create(..., interface={name})`` (``easyrpc.proxy``) or
``interface=Async{name}`` (``easyrpc.aio``); ``easyrpc stubgen --check URL FILE`` tells
whether the server still matches it. Do not edit: generate it again.
"""

from __future__ import annotations

import builtins
import collections.abc
import dataclasses
import datetime
import decimal
import enum
import typing
import uuid

import typing_extensions
'''


def class_name_for(path: str) -> str:
    """``/ws/server_a`` -> ``ServerA``: the blocking Protocol's default name."""
    last = [part for part in path.split("/") if part]
    words = "".join(c if c.isalnum() else " " for c in (last[-1] if last else "server")).split()
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Server"
    return name if is_identifier(name) and not name[0].isdigit() else "Server" + name


class _Types:
    """The named types of all descriptions, merged, under names that collide with nothing."""

    def __init__(self, descriptions: list[dict[str, Any]], taken: set[str]) -> None:
        self.defs: dict[str, dict[str, Any]] = {}
        self.names_of: list[dict[str, str]] = []  # per description: its keys -> names in the module
        seen: dict[tuple[str, str], str] = {}
        for desc in descriptions:
            raw = desc.get("types")
            names: dict[str, str] = {}
            if isinstance(raw, dict):
                for key, definition in list(raw.items())[:MAX_TYPES]:  # as many as a server writes
                    if not is_identifier(key) or not isinstance(definition, dict):
                        continue
                    ident = (key, repr(sorted(definition.items(), key=lambda kv: str(kv[0]))))
                    name = seen.get(ident)
                    if name is None:
                        name = key
                        while name in taken or name in self.defs:
                            name += "_"
                        seen[ident] = name
                        self.defs[name] = definition
                    names[key] = name
            self.names_of.append(names)
        self.scope: dict[str, Mapping[str, str]] = {}
        for names in self.names_of:
            for name in names.values():
                self.scope.setdefault(name, names)


def _type_of(entry: Mapping[str, Any], names: Mapping[str, str], type_key: str = "type",
             text_key: str = "annotation", *, old_server: bool = False) -> tuple[str, str | None]:
    """The annotation to write and, if it had to become Any, the original text for a comment.

    Only for an *old_server* (one that sends no ``types``) is the display text tried: a
    newer server's missing ``type`` means the annotation is outside the vocabulary, and its
    text may name a class of the server's that happens to share a ``typing`` name.
    """
    node = parse_type(entry.get(type_key), names)
    if node is None and old_server:
        node = parse_type(entry.get(text_key), names, bare_typing=True)
    if node is not None:
        return ast.unparse(node), None
    text = entry.get(text_key)
    return ANY, text if isinstance(text, str) and text else None


def _default(entry: Mapping[str, Any], annotation: str, names: Mapping[str, str]) -> str | None:
    member = entry.get("member")
    if isinstance(member, str) and "." in member and member in names:  # "Key.MEMBER" of an enum written
        return names[member]
    if "value" not in entry:
        return None
    value = entry["value"]
    if value is None and annotation != ANY and "None" not in annotation:
        return None  # no implicit Optional: `...` says "has a default" without lying about its type
    return render_value(value)


def _type_class(name: str, d: Mapping[str, Any], names: Mapping[str, str]) -> list[str] | None:
    kind = d.get("kind")
    doc = d.get("doc")
    lines: list[str] = []
    if kind == "enum":
        base = {"str": "str, enum.Enum", "int": "enum.IntEnum"}.get(str(d.get("base")), "enum.Enum")
        lines.append(f"class {name}({base}):")
        members = d.get("members")
        if not isinstance(members, list) or not members:
            return None
        body = []
        for m in members:
            if not isinstance(m, dict) or not is_identifier(m.get("name")) or str(m["name"]).startswith("_"):
                return None
            value = render_value(m.get("value")) if type(m.get("value")) in (str, int, float, bool) else None
            if value is None:
                return None
            body.append(f"    {m['name']} = {value}")
    else:
        header = {"dataclass": f"@dataclasses.dataclass\nclass {name}:",
                  "namedtuple": f"class {name}(typing.NamedTuple):",
                  "typeddict": f"class {name}(typing_extensions.TypedDict):"}.get(str(kind))
        fields = d.get("fields")
        if header is None or not isinstance(fields, list):
            return None
        lines.append(header)
        body = []
        seen: set[str] = set()
        defaulted = False
        for f in fields:
            if not isinstance(f, dict) or not is_identifier(f.get("name")) or f["name"] in seen:
                return None
            seen.add(f["name"])
            annotation, unresolved = _type_of(f, names)
            line = f"    {f['name']}: {annotation}"
            if kind != "typeddict" and "default" in f:
                default = _default(f, annotation, names)
                if default is None and kind == "dataclass" and f.get("factory") in ("list", "dict", "set", "frozenset", "tuple"):
                    default = f"dataclasses.field(default_factory={f['factory']})"
                if default is not None:
                    line += f" = {default}"
                    defaulted = True
                elif defaulted and kind == "dataclass":
                    line += " = dataclasses.field(kw_only=True)"  # a default stubgen cannot write
            elif defaulted and kind == "dataclass":
                line += " = dataclasses.field(kw_only=True)"
            if unresolved is not None:
                line += f"  # {comment_text(unresolved)}"
            body.append(line)
    if kind == "typeddict":
        return _typeddict(name, doc, [f.get("required") is not False for f in fields or []], body)
    if isinstance(doc, str) and doc:
        lines.append("    " + doc_literal(doc, "    "))
    lines += body or (["    pass"] if not lines[1:] else [])
    return lines


def _typeddict(name: str, doc: Any, required: list[bool], body: list[str]) -> list[str]:
    """A TypedDict whose optional keys are those of a ``total=False`` class: the generated
    module's annotations are text, in which TypedDict cannot see ``NotRequired``."""
    optional = [line for line, req in zip(body, required, strict=True) if not req]
    needed = [line for line, req in zip(body, required, strict=True) if req]
    head = "typing_extensions.TypedDict"
    lines = []
    if optional and needed:
        lines += [f"class _{name}Required({head}):"] + needed + ["", ""]
        head = f"_{name}Required"
    lines.append(f"class {name}({head}{', total=False' if optional else ''}):")
    if isinstance(doc, str) and doc:
        lines.append("    " + doc_literal(doc, "    "))
    own = optional if optional else needed
    return lines + (own or ["    pass"])


# what the proxy itself offers beside the functions: closing it, and closing it with `with`
_PROXY = [
    "    def close(self) -> None: ...",
    "    def __enter__(self) -> typing_extensions.Self: ...",
    "    def __exit__(self, *exc_info: object) -> None: ...",
]
_PROXY_AIO = [
    "    async def close(self) -> None: ...",
    "    async def __aenter__(self) -> typing_extensions.Self: ...",
    "    async def __aexit__(self, *exc_info: object) -> None: ...",
]


def _self_name(params: Iterable[str]) -> str:
    name = "self"
    taken = set(params)
    while name in taken:
        name = "_" + name
    return name


def _qualify_builtins(annotation: str, shadowed: set[str]) -> str:
    """Builtins a method of the Protocol would shadow (a remote ``list()``), as ``builtins.X``."""
    if not shadowed:
        return annotation
    tree = ast.parse(annotation, mode="eval")

    class Qualify(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:
            if node.id in shadowed:
                return ast.Attribute(ast.Name("builtins", ast.Load()), node.id, ast.Load())
            return node

    return ast.unparse(Qualify().visit(tree))


def _method(desc: Mapping[str, Any], names: Mapping[str, str], aio: bool, shadowed: set[str]) -> list[str]:
    params = [p for p in desc.get("parameters", []) if isinstance(p, dict)]
    parts = [_self_name(p["name"] for p in params)]
    comments = []
    positional_only = any(p.get("kind") == "POSITIONAL_ONLY" for p in params)
    star = any(p.get("kind") == "VAR_POSITIONAL" for p in params)
    for i, p in enumerate(params):
        kind = p.get("kind")
        annotation, unresolved = _type_of(p, names, old_server="types" not in desc)
        annotation = _qualify_builtins(annotation, shadowed)
        if unresolved is not None:
            comments.append(f"{p['name']}: {comment_text(unresolved)}")
        if kind == "KEYWORD_ONLY" and not star:
            parts.append("*")
            star = True
        text = f"{p['name']}: {annotation}"
        if kind == "VAR_POSITIONAL":
            text = "*" + text
        elif kind == "VAR_KEYWORD":
            text = "**" + text
        elif "default" in p:
            text += f" = {_default(p, annotation, names) or '...'}"
        parts.append(text)
        if positional_only and kind == "POSITIONAL_ONLY" and (i + 1 == len(params) or params[i + 1].get("kind") != kind):
            parts.append("/")
    ret, unresolved = _type_of(desc, names, "return_type", "return_annotation", old_server="types" not in desc)
    if unresolved is not None:
        comments.append(f"return: {comment_text(unresolved)}")
    if desc.get("kind") == "generator":
        node = parse_type(ret, {n: n for n in names.values()}) if ret != ANY else None
        item = ANY
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ITERATORS:
            sl = node.slice
            item = ast.unparse(sl.elts[0] if isinstance(sl, ast.Tuple) and sl.elts else sl)
        ret = f"collections.abc.{'AsyncIterator' if aio else 'Iterator'}[{item}]"
    ret = _qualify_builtins(ret, shadowed)
    lines = [f"    # unresolved annotations, typed Any: {'; '.join(comments)}"] if comments else []
    asyn = "async " if aio and desc.get("kind") != "generator" else ""
    lines.append(f"    {asyn}def {desc['name']}({', '.join(parts)}) -> {ret}:")
    doc = desc.get("doc")
    if isinstance(doc, str) and doc:
        lines.append("        " + doc_literal(doc, "        "))
    lines.append("        ...")
    return lines


def _usable(desc: Any, skip: set[str]) -> bool:
    if not isinstance(desc, dict) or not is_identifier(desc.get("name")) or desc["name"] in skip:
        return False
    params = desc.get("parameters")
    return isinstance(params, list) and all(
        isinstance(p, dict) and is_identifier(p.get("name")) and p.get("kind") in _KINDS for p in params)


def render_module(descriptions: list[dict[str, Any]], class_name: str, *, namespace: str = "DEFAULT",
                  skip: Iterable[str] = ()) -> str:
    """The module's source, for *descriptions* (as the proxy received and validated them).

    Functions named in *skip* (the proxy's own attributes, which hide them) and names
    starting with ``_`` are left out; so is the builtin ``get_registered_functions``.
    """
    skipped = set(skip) | {"get_registered_functions"}
    descs = sorted((d for d in descriptions if _usable(d, skipped) and not d["name"].startswith("_")),
                   key=lambda d: d["name"])
    fnames = {d["name"] for d in descs}
    taken = set(_RESERVED) | fnames | {class_name, "Async" + class_name}
    types = _Types(descs, taken)
    shadowed = fnames & (BUILTIN_TYPES | {"builtins"})
    where = f" (namespace {namespace})" if namespace.isidentifier() else ""
    out = [HEADER.format(where=where, name=class_name).rstrip("\n")]
    enums_first = sorted(types.defs, key=lambda n: (types.defs[n].get("kind") != "enum", n))
    dropped = {n for n in enums_first if _type_class(n, types.defs[n], types.scope[n]) is None}
    kept = [n for n in enums_first if n not in dropped]
    for names in types.names_of:  # an enum default, "Key.MEMBER", only for members the enum has
        for key, name in list(names.items()):
            if name in kept and types.defs[name].get("kind") == "enum":
                names.update({f"{key}.{m['name']}": f"{name}.{m['name']}" for m in types.defs[name]["members"]})
    out += ["", f"__all__ = {sorted([class_name, 'Async' + class_name, *kept])!r}"]
    for name in kept:
        scope = {k: v for k, v in types.scope[name].items() if v not in dropped}
        out += ["", ""] + (_type_class(name, types.defs[name], scope) or [])
    for aio in (False, True):
        cname = ("Async" if aio else "") + class_name
        client = "easyrpc.aio" if aio else "easyrpc.proxy"
        out += ["", "", f"class {cname}(typing.Protocol):",
                f'    """The functions of the server through ``{client}.EasyRpcProxy``."""', ""]
        out += _PROXY_AIO if aio else _PROXY
        for desc, names in zip(descs, types.names_of, strict=True):
            usable = {k: v for k, v in names.items() if v not in dropped}
            out += [""] + _method(desc, usable, aio, shadowed)
    text = "\n".join(out) + "\n"
    ast.parse(text)  # what was written must be Python: a bug here must not write a broken file
    return text
