"""Settings are declared once (options.Options, its field metadata): the
core's Config, the session's info and access state, join() and quick_join(),
the CLI and the README's tables are held to that one declaration."""

from __future__ import annotations

import inspect
import re
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest

import p2pstate
from p2pstate.cli import build_parser
from p2pstate.core.access import SETTINGS, Access
from p2pstate.core.config import Config
from p2pstate.lobby import SessionInfo
from p2pstate.messages import session_info
from p2pstate.options import DERIVED_CONFIG, Options, settings
from p2pstate.state import SharedState

README = Path(__file__).resolve().parent.parent / "README.md"
OPTIONS = {f.name: f for f in fields(Options)}


def default(name: str) -> Any:
    f = OPTIONS[name]
    return f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]


def test_every_config_field_is_an_option_or_declared_derived() -> None:
    core = set(settings("core"))
    config = {f.name for f in fields(Config)}
    assert config == core | set(DERIVED_CONFIG), config ^ (core | set(DERIVED_CONFIG))
    assert not core & set(DERIVED_CONFIG)
    made, plain = Options().core_config(), Config()
    for name in core:  # the core's defaults are the options' defaults
        assert getattr(made, name) == getattr(plain, name) == default(name), name


def test_options_reach_the_config_by_name() -> None:
    given = {
        "heartbeat_interval": 0.05,
        "host_timeout": 0.4,
        "log_keep": 7,
        "durability": "majority",
    }
    config = Options(**given).core_config()
    for name, value in given.items():
        assert getattr(config, name) == value


def test_access_options_are_the_access_settings() -> None:
    assert settings("access") == SETTINGS
    assert Options().access().settings() == Access().settings()
    assert Options(max_keys=5, write_rate=7).access().settings()["max_keys"] == 5


def test_session_options_are_what_set_session_info_and_the_lobby_take() -> None:
    names = settings("session")
    parameters = inspect.signature(SharedState.set_session_info).parameters
    assert tuple(p for p in parameters if p != "self") == names
    assert set(names) <= {f.name for f in fields(SessionInfo)}
    assert set(session_info(Options().session_info())) == set(names)


def test_join_takes_every_option_and_quick_join_nothing_undeclared() -> None:
    own = set(inspect.signature(p2pstate.join).parameters) - {"options"}
    assert not own & set(OPTIONS)  # join's own arguments are not options too
    quick = inspect.signature(p2pstate.quick_join).parameters
    extra = {"app", "where", "browse_timeout", "options"}
    assert set(quick) - extra <= set(OPTIONS) | own, set(quick) - extra - set(OPTIONS) - own
    for name in OPTIONS:  # every option by name (from_kwargs refuses unknown ones)
        Options.from_kwargs({name: default(name)})
    with pytest.raises(TypeError, match="unknown option"):
        Options.from_kwargs({"heartbeat": 1})


def _flags() -> dict[str, set[str]]:
    """Each sub-command of the CLI and its option strings."""
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return {
        name: {s for action in p._actions for s in action.option_strings}
        for name, p in sub.choices.items()  # type: ignore[union-attr]
    }


def test_the_cli_exposes_the_options_declared_for_it() -> None:
    flags = _flags()
    declared = {f.metadata["cli"]: f.name for f in fields(Options) if f.metadata["cli"]}
    assert declared, "no option declares a CLI flag"
    for flag in declared:
        assert any(flag in options for options in flags.values()), flag
    # Hosting takes every session setting the CLI declares.
    host = {flag for flag, name in declared.items() if name in settings("session")}
    assert host <= flags["host"]
    # Every command that joins a session takes its secret.
    for command in ("get", "set", "del", "keys", "watch", "host", "join", "backup", "restore"):
        assert "--secret" in flags[command], command


_UNITS = {"s": 1, "KiB": 1024, "MiB": 1024 * 1024}


def _readme_default(cell: str) -> Any:
    cell = cell.replace("`", "").strip()
    number = re.match(r"^([\d.,]+)\s*(s|KiB|MiB)?\b", cell)
    if number:
        value = float(number.group(1).replace(",", ""))
        value *= _UNITS.get(number.group(2) or "", 1)
        return int(value) if value.is_integer() and number.group(2) != "s" else value
    for text, value in (("None", None), ("True", True), ("False", False), ("{}", {})):
        if cell.startswith(text):
            return value
    return cell.strip('"')


def test_the_readme_documents_every_option_with_its_default() -> None:
    text = README.read_text(encoding="utf-8")
    for name in OPTIONS:
        assert f"`{name}`" in text, f"the README never names option {name}"
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", text, re.MULTILINE)
    checked = set()
    for name, cell in rows:
        if name in OPTIONS:
            assert _readme_default(cell) == default(name), (name, cell)
            checked.add(name)
    assert len(checked) >= 20, checked
