"""The AST fence: finds OS-specific code outside actors/osdeps/, however it is spelled.

Parsed with `ast`, so comments never trip it; names are followed through aliases (`import os as o`,
`from os import kill as k`, `from signal import *`), `getattr(os, "killpg")`, `__import__("fcntl")`
and `importlib.import_module("pwd")`. Docstrings are prose and are skipped; other string literals
that name /proc are flagged, since /proc exists only on Linux.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

OS_CALLS = re.compile(
    r"fork.*|kill|killpg|setsid|getsid|getpgid|setpgid|getpgrp|setpgrp|system|popen|exec.*|spawn.*|posix_spawn.*"
    r"|wait|wait3|wait4|waitpid|waitid|waitstatus_to_exitcode|get(e)?(u|g)id|set(e|re|res)?(u|g)id|getgroups"
    r"|setgroups|initgroups|chown|lchown|fchown|nice|sched_.*|(get|set)priority|getloadavg|name|uname"
)
KWARGS = {"preexec_fn", "start_new_session", "process_group", "creationflags", "startupinfo", "user", "group",
          "extra_groups", "umask", "pass_fds"}  # fmt: skip
MODULES = re.compile(r"(fcntl|resource|pwd|grp|termios|tty|pty|msvcrt|winreg|_winapi|win32.*|ctypes|posix|nt)(\..*)?")
PLATFORM = {"sys": {"platform", "getwindowsversion"}, "platform": {"system", "uname", "platform", "win32_ver",
            "win32_edition", "mac_ver", "release", "version", "libc_ver", "freedesktop_os_release"}}  # fmt: skip
WATCHED = {"os", "signal", "sys", "platform"}


class _Fence(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []
        self.modules: dict[str, str] = {}  # local name -> watched module it stands for
        self.names: dict[str, str] = {}  # local name -> "module.attr" it was imported as
        self.docstrings: set[int] = set()

    def flag(self, node: ast.AST, what: str) -> None:
        self.found.append((getattr(node, "lineno", 0), what))

    # --- imports -------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802 - ast's naming
        for alias in node.names:
            if MODULES.fullmatch(alias.name):
                self.flag(node, f"import {alias.name}")
            elif alias.name == "signal":
                self.flag(node, "import signal")
            if alias.name in WATCHED:
                self.modules[alias.asname or alias.name] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
        module = node.module or ""
        if MODULES.fullmatch(module):
            self.flag(node, f"from {module} import ...")
            return
        for alias in node.names:
            if MODULES.fullmatch(f"{module}.{alias.name}".lstrip(".")) or MODULES.fullmatch(alias.name) and not module:
                self.flag(node, f"from {module} import {alias.name}")
            if module in WATCHED:
                if alias.name == "*" and module in ("os", "signal", "platform"):
                    self.flag(node, f"from {module} import *")
                elif self._forbidden(module, alias.name):
                    self.flag(node, f"from {module} import {alias.name}")
                self.names[alias.asname or alias.name] = f"{module}.{alias.name}"

    # --- uses ----------------------------------------------------------------------------------
    def visit_Attribute(self, node: ast.Attribute) -> None:  # noqa: N802
        if isinstance(node.value, ast.Name) and node.value.id in self.modules:
            module = self.modules[node.value.id]
            if self._forbidden(module, node.attr):
                self.flag(node, f"{module}.{node.attr}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:  # noqa: N802
        func = node.func
        if isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) >= 2:
            target, name = node.args[0], node.args[1]
            if isinstance(target, ast.Name) and target.id in self.modules:
                module = self.modules[target.id]
                if not isinstance(name, ast.Constant) or not isinstance(name.value, str):
                    if module in ("os", "signal"):
                        self.flag(node, f"getattr({module}, <computed name>)")
                elif self._forbidden(module, name.value):
                    self.flag(node, f"getattr({module}, {name.value!r})")
        dynamic = (isinstance(func, ast.Name) and func.id == "__import__") or (
            isinstance(func, ast.Attribute) and func.attr == "import_module"
        )
        first = node.args[0] if node.args else None
        module = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""
        if dynamic and (MODULES.fullmatch(module) or module == "signal"):
            self.flag(node, f"import of {module!r}")
        for keyword in node.keywords:
            if keyword.arg in KWARGS and _is_subprocess_call(func):
                self.flag(keyword.value, f"{keyword.arg}=")
            if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant) and not keyword.value.value):
                self.flag(keyword.value, "shell=True")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:  # noqa: N802
        imported = self.names.get(node.id)
        if imported is not None and self._forbidden(*imported.split(".", 1)):
            self.flag(node, f"{imported} (imported as {node.id})")

    def visit_Constant(self, node: ast.Constant) -> None:  # noqa: N802
        if id(node) not in self.docstrings and isinstance(node.value, str) and re.search(r"/proc\b", node.value):
            self.flag(node, f"'/proc' in {node.value[:40]!r}")

    def _forbidden(self, module: str, attr: str) -> bool:
        if module == "signal":
            return True
        if module == "os":
            return bool(OS_CALLS.fullmatch(attr))
        return attr in PLATFORM.get(module, ())


def _is_subprocess_call(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in ("Popen", "run", "call", "check_call", "check_output") or name.startswith("create_subprocess")


def violations(path: Path) -> list[str]:
    """Every OS-specific use in one file, as "line: what"."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    fence = _Fence()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            fence.docstrings.add(id(first.value))
    fence.visit(tree)
    return [f"{line}: {what}" for line, what in sorted(fence.found)]
