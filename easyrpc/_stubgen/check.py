"""``easyrpc stubgen --check``: what differs between a generated module and the live server.

Both sides are compared as modules written by stubgen (the file as it is, the server's as
stubgen would write it now), member by member: each function of the blocking
``Protocol``, then of the async one, and each named type.
"""

from __future__ import annotations

import ast
import copy

__all__ = ["differences"]


def _members(text: str) -> tuple[dict[str, ast.stmt], dict[str, ast.stmt], dict[str, ast.stmt]]:
    """Functions of the first and second ``Protocol`` classes, and the other classes."""
    protocols: list[dict[str, ast.stmt]] = []
    classes: dict[str, ast.stmt] = {}
    for node in ast.parse(text).body:
        if not isinstance(node, ast.ClassDef):
            continue
        if any(ast.unparse(b) in ("typing.Protocol", "Protocol") for b in node.bases):
            protocols.append({f.name: f for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))})
        else:
            classes[node.name] = node
    while len(protocols) < 2:
        protocols.append({})
    return protocols[0], protocols[1], classes


def _head(node: ast.stmt) -> str:
    """A function's ``def`` line, or a class's name: how a difference is shown."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        bare = copy.copy(node)
        bare.body, bare.decorator_list = [ast.Expr(ast.Constant(...))], []
        return ast.unparse(bare).split("\n", 1)[0].rstrip(":")
    return f"class {getattr(node, 'name', '?')}"


def _compare(what: str, mine: dict[str, ast.stmt], theirs: dict[str, ast.stmt], skip: set[str]) -> list[str]:
    out = []
    for name in sorted(set(mine) | set(theirs)):
        if name in skip:
            continue
        if name not in mine:
            out.append(f"  added on the server: {what}{_head(theirs[name])}")
        elif name not in theirs:
            out.append(f"  removed from the server: {what}{_head(mine[name])}")
        elif ast.dump(mine[name]) != ast.dump(theirs[name]):
            old, new = _head(mine[name]), _head(theirs[name])
            if old == new:
                out.append(f"  changed: {what}{old} (its docstring or body)")
            else:
                out.append(f"  changed: {what}{old}\n      now: {new}")
    return out


def differences(file_text: str, server_text: str) -> list[str]:
    """Lines describing how *file_text* differs from *server_text*; empty if they match."""
    if file_text == server_text:
        return []
    try:
        mine = _members(file_text)
    except SyntaxError as exc:
        return [f"  the file is not Python: {exc}"]
    theirs = _members(server_text)
    out = _compare("", mine[0], theirs[0], set())
    # the async Protocol follows the blocking one: only what differs there alone is news
    seen = {n for n in set(mine[0]) | set(theirs[0]) if n not in mine[0] or n not in theirs[0]
            or ast.dump(mine[0][n]) != ast.dump(theirs[0][n])}
    out += _compare("(aio) ", mine[1], theirs[1], seen)
    out += _compare("", mine[2], theirs[2], set())
    if not out:
        out.append("  the header, imports or class names differ: generate the file again")
    return out
