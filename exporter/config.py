"""Loading and validating the YAML config, with errors a person can act on at 3 a.m.

Every problem names the file, the line, the key path (`targets[0].timeout`), what was found
and what would fix it, and all problems are reported at once. Targets are dispatched to their
kind's model by hand rather than through a pydantic union, so that an unknown kind or a
misspelled key gets one clear message with a did-you-mean instead of one error per union arm.

Warnings are what does not stop a load: a secret `check-config` could not read (it defers
secrets, see `stackprobe.secrets`), a secret too short or too common to be scrubbed wherever
it appears (it is scrubbed only where it stands as a credential), and a kind's `advice` (an
alert of this target that cannot fire without another target), which only the kind knows.
"""

from __future__ import annotations

import difflib
import errno
import functools
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from stackprobe.cluster import ClusterSettings
from stackprobe.console import ConsoleSettings
from stackprobe.contract import ProbeKind
from stackprobe.durations import Duration, format_duration
from stackprobe.exposition import CORE_METRICS
from stackprobe.resource import Shared, declared
from stackprobe.secrets import SecretRef, collect_secrets, read_capped, scrub_warning, secret_refs
from stackprobe.target import TargetConfig

Loc = tuple[str | int, ...]
# A config of 20,000 targets is about 2 MiB of YAML.
CONFIG_MAX_BYTES = 16 * 1024 * 1024


class Defaults(BaseModel):
    """Applied to every target that does not set its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: Duration = 15.0
    timeout: Duration = 5.0


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: Defaults = Defaults()
    console: ConsoleSettings = ConsoleSettings()
    cluster: ClusterSettings = ClusterSettings()
    targets: list[Any] = Field(default_factory=list)


@functools.cache
def _top_level(resources: tuple[Shared[Any, Any], ...]) -> type[BaseModel]:
    """The file's top level: `defaults`, `targets`, and each resource's own section."""
    sections: dict[str, Any] = {r.section: (r.settings, r.settings()) for r in resources}
    model: type[BaseModel] = create_model("TopLevel", __base__=_Base, **sections)
    return model


S = TypeVar("S", bound=BaseModel)


@dataclass(frozen=True)
class Config:
    defaults: Defaults
    targets: tuple[TargetConfig, ...]
    source: str
    # Each shared resource's section, by its name (`http_client`, `aws`).
    sections: Mapping[str, BaseModel] = field(default_factory=dict)
    # What validators built while checking, so files are read once per load (TLS contexts).
    built: Mapping[str, Any] = field(default_factory=dict)
    # Findings that do not stop a load: secrets left unread, companion targets missing.
    warnings: tuple[Problem, ...] = ()
    # The kinds of targets left out of `targets` because checking them needed a secret a
    # deferred load could not read (`check-config` counts them; `run` never has any).
    partial: tuple[str, ...] = ()
    # What the landing page links to and reads from (`console:`).
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    # Which replica probes which target (`cluster:`); read at start, not on reload.
    cluster: ClusterSettings = field(default_factory=ClusterSettings)

    def secrets(self) -> set[str]:
        return collect_secrets(self.targets)

    def section(self, shared: Shared[S, Any]) -> S:
        """A resource's settings: the file's section, or its defaults when it has none."""
        found = self.sections.get(shared.section)
        return found if isinstance(found, shared.settings) else shared.settings()


@dataclass(frozen=True, order=True)
class Problem:
    source: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """Every problem found in one config; `str()` lists them one per line."""

    def __init__(self, problems: Sequence[Problem], warnings: Sequence[Problem] = ()) -> None:
        self.problems = sorted(problems)
        self.warnings = list(warnings)  # shown by check-config, never part of the message
        super().__init__("\n".join(map(str, self.problems)))


def load_config(
    path: str | Path,
    kinds: Mapping[str, ProbeKind[Any]],
    environ: Mapping[str, str] | None = None,
    *,
    defer_secrets: bool = False,
) -> Config:
    """`defer_secrets`: a secret that cannot be read is a warning and stays unresolved (for
    checking a config where its secrets are not); such a config must never be run."""
    source = str(path)
    try:
        text = read_capped(Path(path), CONFIG_MAX_BYTES)
    except (OSError, ValueError) as exc:  # ValueError: too large, or not UTF-8
        line = exc.object.count(b"\n", 0, exc.start) + 1 if _binary(exc) else 0
        reason = _unreadable(Path(path), exc)
        raise ConfigError(
            [Problem(source, line, "", f"cannot read the config file: {reason}")]
        ) from None
    return parse_config(text, source, kinds, environ, defer_secrets=defer_secrets)


def _binary(exc: Exception) -> typing.TypeGuard[UnicodeDecodeError]:
    return isinstance(exc, UnicodeDecodeError) and isinstance(exc.object, bytes)


def _unreadable(path: Path, exc: OSError | ValueError) -> str:
    """Why the file cannot be read, and what to do, in one line."""
    if _binary(exc):
        if exc.object.startswith((b"\xff\xfe", b"\xfe\xff")):
            return "it is UTF-16 text; save it as UTF-8"
        return (
            f"it is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}): "
            "a binary file, or text in another encoding; a config is YAML text saved as UTF-8"
        )
    if not isinstance(exc, OSError):
        return str(exc)  # too large: read_capped says by how much
    if exc.errno == errno.EISDIR:
        return "it is a directory; give the path of the YAML file"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path before the file name is not a directory; check the path"
    if exc.errno == errno.ENOENT and path.is_symlink():
        return f"it is a symbolic link to {os.readlink(path)}, which does not exist; fix the link"
    if exc.errno == errno.ENOENT:
        return "No such file or directory; check the path"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied; make it (and the directories above it) readable by the user "
            f"stackprobe runs as (uid {os.geteuid()})"
        )
    if exc.errno == errno.ELOOP:
        return "its symbolic links go round in a loop; fix the link"
    return exc.strerror or type(exc).__name__


def parse_config(
    text: str,
    source: str,
    kinds: Mapping[str, ProbeKind[Any]],
    environ: Mapping[str, str] | None = None,
    *,
    defer_secrets: bool = False,
) -> Config:
    base_dir = Path(source).parent if not source.startswith("<") else Path.cwd()
    loader = _Loader(source, text, kinds, os.environ if environ is None else environ, base_dir)
    if defer_secrets:
        loader.context["secrets"] = "defer"
    try:
        return loader.load()
    except ConfigError:
        raise
    except (RecursionError, TypeError, ValueError, yaml.YAMLError) as exc:
        # Input no rule foresaw (a YAML key that is a list, nesting deep enough to recurse):
        # still a config problem, never a traceback or a silently failed reload.
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ConfigError(
            [Problem(source, 0, "", f"cannot load the config: {type(exc).__name__}: {detail}")]
        ) from None


class _Loader:
    def __init__(
        self,
        source: str,
        text: str,
        kinds: Mapping[str, ProbeKind[Any]],
        environ: Mapping[str, str],
        base_dir: Path,
    ) -> None:
        self.source = source
        self.text = text
        self.kinds = kinds
        # Validators read the environment and resolve relative paths through this, and note
        # the TLS profiles they have already checked so each is loaded once per load.
        self.context: dict[str, Any] = {
            "environ": environ,
            "base_dir": base_dir,
            "built": {},
            "unresolved": [],  # (SecretRef, why) for each secret a deferred load left unread
        }
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        # Keys whose check stopped at an unresolved secret, in the last `_report`.
        self.unchecked: list[Loc] = []
        self.partial: list[str] = []
        self.root: yaml.Node | None = None
        self.defaults_ok = True

    def problem(self, loc: Loc, message: str, *, key: bool = False) -> None:
        self.problems.append(Problem(self.source, self._line(loc, key), _path(loc), message))

    def warning(self, loc: Loc, message: str) -> None:
        found = Problem(self.source, self._line(loc, False), _path(loc), message)
        if found not in self.warnings:
            self.warnings.append(found)

    def _resources(self, data: dict[str, Any]) -> list[Shared[Any, Any]]:
        """The resources of the kinds the targets name, and of the kinds that declare the
        file's other sections: only those kinds are imported (probes/__init__.py). A section
        no kind declares brings in every kind, so its error can suggest the right one."""
        targets = data.get("targets")
        named = (
            {t.get("kind") for t in targets if isinstance(t, dict)}
            if isinstance(targets, list)
            else set()
        )
        found = declared(self.kinds[name] for name in self.kinds if name in named)
        sections = {str(key) for key in data} - _Base.model_fields.keys()
        sections -= {shared.section for shared in found}
        for name in self.kinds:
            if not sections:
                return found
            owned = [s for s in self.kinds[name].resources if s.section in sections]
            found += [s for s in owned if s not in found]
            sections -= {s.section for s in owned}
        return found if not sections else declared(self.kinds.values())

    def load(self) -> Config:
        data = self._yaml()
        if not isinstance(data, dict):
            found = "an empty file" if data is None else f"a {_type_name(data)}"
            self.problem((), f"expected a mapping with a `targets:` list, found {found}")
            raise ConfigError(self.problems)
        model = _top_level(tuple(self._resources(data)))
        try:
            top: Any = model.model_validate(data, context=self.context)
        except ValidationError as exc:
            self._report(exc, (), model)
            top = model.model_validate(
                {k: v for k, v in data.items() if k == "targets" and isinstance(v, list)}
            )
        defaults = top.defaults
        # Targets inherit `defaults`; when those are wrong, that is one problem, reported once.
        self.defaults_ok = not any(p.path.startswith("defaults") for p in self.problems)
        if self.defaults_ok and defaults.timeout >= defaults.interval:
            self.defaults_ok = False
            self.problem(
                ("defaults", "timeout"),
                f"timeout {format_duration(defaults.timeout)} is not below interval "
                f"{format_duration(defaults.interval)}; a run must end before the next begins",
            )
        self._note_unresolved(0, (), data)
        for name in type(top).model_fields.keys() - _Base.model_fields.keys():
            self._note_weak_secrets(getattr(top, name), (name,), data.get(name))
        validated = [self._target(i, raw, defaults) for i, raw in enumerate(top.targets)]
        self._check_unique_names(top.targets)
        warnings = sorted(self.warnings)
        if self.problems:
            raise ConfigError(self.problems, warnings)
        targets = tuple(t for t in validated if t is not None)
        warnings += self._advice(validated, targets)
        sections = {
            name: getattr(top, name)
            for name in type(top).model_fields
            if name not in _Base.model_fields
        }
        return Config(
            defaults,
            targets,
            self.source,
            sections,
            dict(self.context["built"]),
            tuple(warnings),
            tuple(self.partial),
            top.console,
            top.cluster,
        )

    def _advice(
        self, validated: Sequence[TargetConfig | None], targets: Sequence[TargetConfig]
    ) -> list[Problem]:
        """Each kind's word on what its target needs from the others for its alerts to fire:
        the core cannot know which alert joins which kinds' series."""
        found = []
        for index, target in enumerate(validated):
            advice = self.kinds[target.kind].advice if target is not None else None
            if target is not None and advice is not None:
                where = f"targets[{index}] ({target.name})"
                found += [Problem(self.source, 0, where, text) for text in advice(target, targets)]
        return found

    def _note_unresolved(self, start: int, loc: Loc, raw: Any) -> None:
        """Warn about each secret the last validation could not read, at every key under `loc`
        that names it (the secret itself does not know where it sits)."""
        for ref, why in self.context["unresolved"][start:]:
            for place in _places_of(ref, raw, loc) or [loc]:
                self.warning(place, why)

    def _note_weak_secrets(self, checked: Any, loc: Loc, raw: Any) -> None:
        """Warn about each secret too short or too common to be scrubbed wherever it appears
        (see `stackprobe.secrets.weakness`), at the keys under `loc` that name it."""
        for ref in secret_refs(checked):
            why = scrub_warning(ref)
            if why is not None:
                for place in _places_of(ref, raw, loc) or [loc]:
                    self.warning(place, why)

    def _yaml(self) -> Any:
        try:
            self.root = yaml.compose(self.text, Loader=_YAML_LOADER)
            if self.root is None:
                return None
            size = _expanded_size(self.root, {})
            if size > MAX_EXPANDED_VALUES:
                self.problems.append(Problem(self.source, 0, "", _too_big(size)))
                raise ConfigError(self.problems)
            self._duplicate_keys(self.root, (), set())
            # the values from the nodes just checked, not from a second parse of the text
            return yaml.constructor.SafeConstructor().construct_document(self.root)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 0
            detail = _one_line(" ".join(str(p) for p in (exc.context, exc.problem) if p))
            if mark is not None and _char_at(self.text, mark) == "\t" and "tab" not in detail:
                detail += " (a tab: YAML indents with spaces only)"
            column = f", column {mark.column + 1}" if mark else ""
            self.problems.append(Problem(self.source, line, "", f"invalid YAML{column}: {detail}"))
        except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, ESC)
            line = self.text.count("\n", 0, exc.position) + 1
            self.problems.append(
                Problem(
                    self.source,
                    line,
                    "",
                    f"a control character (U+{exc.character:04X}) YAML does not allow: is it a "
                    "binary file? Remove the character, or give the path of the YAML text file",
                )
            )
        except yaml.YAMLError as exc:  # on one line, as every problem is
            self.problems.append(Problem(self.source, 0, "", f"invalid YAML: {_one_line(exc)}"))
        raise ConfigError(self.problems)

    def _duplicate_keys(self, node: yaml.Node, loc: Loc, seen_nodes: set[int]) -> None:
        """Each node once: an alias names a node already walked where its anchor is."""
        if id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # a list or mapping as a key: validation says what is wrong
                key = key_node.value
                if key in seen:
                    self.problems.append(
                        Problem(
                            self.source,
                            key_node.start_mark.line + 1,
                            _path((*loc, key)),
                            f"duplicate key {key!r} (first on line {seen[key]}); YAML keeps only "
                            "the last one, so remove one of them",
                        )
                    )
                seen.setdefault(key, key_node.start_mark.line + 1)
                self._duplicate_keys(value_node, (*loc, key), seen_nodes)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._duplicate_keys(item, (*loc, index), seen_nodes)

    def _target(self, index: int, raw: Any, defaults: Defaults) -> TargetConfig | None:
        loc: Loc = ("targets", index)
        if not isinstance(raw, dict):
            self.problem(loc, f"expected a mapping with name and kind, found {_describe(raw)}")
            return None
        known = ", ".join(sorted(self.kinds))
        kind_name = raw.get("kind")
        if kind_name is None:
            self.problem(loc, f"missing key `kind`; set it to one of: {known}")
            return None
        kind = self.kinds.get(kind_name) if isinstance(kind_name, str) else None
        if kind is None:
            hint = _did_you_mean(str(kind_name), self.kinds)
            self.problem((*loc, "kind"), f"unknown kind {kind_name!r}; {hint}known kinds: {known}")
            return None
        merged = dict(raw)
        for key in ("interval", "timeout"):  # as strings, so defaults take one validation path
            merged.setdefault(key, format_duration(getattr(defaults, key)))
        start = len(self.context["unresolved"])
        try:
            target: TargetConfig = kind.config.model_validate(merged, context=self.context)
        except ValidationError as exc:
            self._report(exc, loc, kind.config)
            if self.unchecked:  # a validator stopped at a secret it needed the value of
                self.partial.append(kind.name)
                keys = ", ".join(_path(part[len(loc) :]) for part in self.unchecked)
                self.warning(
                    loc,
                    f"checked only in part: checking {keys} needs the secret's value, and so "
                    "do the checks across this target's keys",
                )
            return None
        finally:
            self._note_unresolved(start, loc, raw)
        self._note_weak_secrets(target, loc, raw)
        for key in ("interval", "timeout"):
            if getattr(target, key) <= 0:
                self.problem((*loc, key), f"{key} must be longer than 0s")
                return None
        clash = sorted(set(target.labels) & _kind_labels(kind))
        if clash:
            self.problem(
                (*loc, "labels", clash[0]),
                f"label {clash[0]} is one of the {kind.name} kind's own labels; name it otherwise",
            )
            return None
        own = "timeout" in raw and "interval" in raw
        if target.timeout >= target.interval and (own or self.defaults_ok):
            culprit = "timeout" if "timeout" in raw else "interval" if "interval" in raw else None
            origin = "" if "timeout" in raw else " (from defaults.timeout)"
            self.problem(
                (*loc, culprit) if culprit else ("defaults", "timeout"),
                f"timeout {format_duration(target.timeout)}{origin} is not below interval "
                f"{format_duration(target.interval)}; lower the timeout or raise the interval",
            )
            return None
        return target

    def _check_unique_names(self, raw_targets: Sequence[Any]) -> None:
        first: dict[str, int] = {}
        for index, raw in enumerate(raw_targets):
            name = raw.get("name") if isinstance(raw, dict) else None
            if not isinstance(name, str):
                continue
            if name in first:
                self.problem(
                    ("targets", index, "name"),
                    f"duplicate target name {name!r} (first used by targets[{first[name]}]); "
                    "names must be unique because they become the `target` label",
                )
            else:
                first[name] = index

    def _report(self, exc: ValidationError, prefix: Loc, model: type[BaseModel]) -> None:
        errors = exc.errors(include_url=False)
        self.unchecked = []
        # A misspelled key shows up twice: as unknown, and its intended key as missing. Keep the
        # one that carries the fix.
        suggested = {
            (*_clean_loc(e["loc"])[:-1], hint)
            for e in errors
            if e["type"] == "extra_forbidden"
            for hint in _close(str(e["loc"][-1]), _fields_at(model, _clean_loc(e["loc"])[:-1]))
        }
        seen: set[Loc] = set()
        for error in errors:
            local = _clean_loc(error["loc"])
            key = (error.get("ctx") or {}).get("entry")
            if key is not None:  # a validator of a whole mapping or list names the entry
                local = (*local, key)
            loc = (*prefix, *local)
            if loc in seen:  # one message per key; pydantic may report several per union arm
                continue
            seen.add(loc)
            kind = error["type"]
            if kind == "secret_unresolved":  # not wrong, only not checked (see secrets.py)
                self.unchecked.append(loc)
                continue
            if kind == "extra_forbidden":
                allowed = _fields_at(model, local[:-1])
                hint = _did_you_mean(str(loc[-1]), allowed)
                listing = f"allowed keys: {', '.join(sorted(allowed))}" if allowed else ""
                self.problem(
                    loc, f"unknown key {loc[-1]!r}; {hint or listing}".rstrip("; "), key=True
                )
            elif kind == "missing":
                if local not in suggested:
                    self.problem(loc[:-1], f"missing required key `{loc[-1]}`")
            else:
                self.problem(loc, _message(error, sensitive=_is_sensitive(loc)))

    def _line(self, loc: Loc, key: bool) -> int:
        node = self.root
        key_node: yaml.Node | None = None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                match = [(k, v) for k, v in node.value if k.value == part]
                if not match:
                    break
                key_node, node = match[-1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    break
                key_node, node = None, node.value[part]
            else:
                break
        chosen = key_node if key and key_node is not None else node
        return chosen.start_mark.line + 1 if chosen is not None else 0


# Values the file holds once every alias is expanded. A config of 20,000 targets holds about
# 400,000 (the examples: 20 a target); an alias bomb (each anchor listing the previous one
# nine times, eight deep: a few hundred bytes) holds hundreds of millions, which validating,
# hashing or comparing would walk one by one, for minutes, on every reload.
MAX_EXPANDED_VALUES = 5_000_000


def _char_at(text: str, mark: yaml.Mark) -> str:
    """The character a YAML error points at (libyaml's messages do not name it)."""
    lines = text.splitlines()
    return lines[mark.line][mark.column : mark.column + 1] if mark.line < len(lines) else ""


# libyaml's parser when PyYAML was built with it (its wheels are): 7x faster than the pure
# Python one and half its garbage, which at 1,000 targets left 3 MiB more RSS for good.
_YAML_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values the node holds with its aliases expanded, counting each distinct node
    once (`sizes`), so a bomb is measured in time linear in its text."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, sizes) for item in node.value)
    sizes[id(node)] = size
    return size


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _too_big(size: int) -> str:
    return (
        f"the YAML expands to {size:,} values through its aliases (`&anchor` / `*anchor`), "
        f"more than the {MAX_EXPANDED_VALUES:,} a config may hold: an alias repeated inside "
        "aliases multiplies; write the values out, or use fewer levels of aliases"
    )


def _kind_labels(kind: ProbeKind[Any]) -> set[str]:
    """Every label the kind's series (and the core's) carry: a target's `labels:` must not
    repeat one, or a series would have it twice."""
    return {label for spec in (*CORE_METRICS, *kind.metrics) for label in spec.labels}


def _places_of(ref: SecretRef, raw: Any, loc: Loc) -> list[Loc]:
    """Where in `raw` (found at `loc`) a mapping names the same source as `ref`."""
    if isinstance(raw, dict):
        if ref.from_env is not None and raw.get("from_env") == ref.from_env:
            return [loc]
        if ref.from_file is not None and Path(str(raw.get("from_file"))) == ref.from_file:
            return [loc]
        items: Any = raw.items()
    elif isinstance(raw, list):
        items = enumerate(raw)
    else:
        return []
    return [place for key, value in items for place in _places_of(ref, value, (*loc, key))]


def _clean_loc(loc: tuple[int | str, ...]) -> Loc:
    """Drop pydantic's validator tags (`function-after[...]`, `str`) that are not keys."""
    return tuple(
        part for part in loc if isinstance(part, int) or not ("[" in part or part in _TAGS)
    )


_TAGS = frozenset({"str", "SecretRef", "int", "float", "bool", "list", "dict", "tuple"})


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.replace("_", "").replace("-", "").isalnum():
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "frozen_set_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


_SENSITIVE_KEY = re.compile(r"passw|secret|token|auth|cookie|api[-_]?key|url|headers", re.I)


def _is_sensitive(loc: Loc) -> bool:
    """Whether a value at this path may be a secret typed inline, so must not be echoed."""
    return any(isinstance(part, str) and _SENSITIVE_KEY.search(part) for part in loc)


def _message(error: Any, sensitive: bool = False) -> str:
    kind = error["type"]
    value = error.get("input")
    found = _describe(value) if not sensitive or not isinstance(value, str) else "a string"
    ctx = error.get("ctx") or {}
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, found {found}"
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",")]
        hint = _did_you_mean(str(error.get("input")), [o for o in options if o])
        return f"expected one of {expected}, found {found}; {hint}".rstrip("; ")
    bounds = {
        "greater_than": "greater than {gt}",
        "greater_than_equal": "at least {ge}",
        "less_than": "less than {lt}",
        "less_than_equal": "at most {le}",
    }
    if kind in bounds:
        return f"must be {bounds[kind].format(**ctx)}, found {found}"
    message: str = error["msg"]
    # Our own validators speak for themselves; pydantic prefixes plain ValueErrors.
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )


def _close(word: str, options: Any) -> list[str]:
    return difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)


def _did_you_mean(word: str, options: Any) -> str:
    """`did you mean 'x'? ` or nothing; callers place it where the sentence needs it."""
    close = _close(word, options)
    return f"did you mean {close[0]!r}? " if close else ""


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """Field names of the model found by following `loc` through nested models."""
    current: Any = model
    skip_key = False
    for part in loc:
        if isinstance(part, int) or skip_key:
            skip_key = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        skip_key = typing.get_origin(field.annotation) is dict  # the next part is a map key
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The first BaseModel in an annotation such as `X | None` or `tuple[X, ...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, tuple, list, dict):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
