"""Starting and stopping an experiment: one value of its window (`start` or `end`) rewritten in the global stack file,
the rest of the hand-written file (comments, quoting, order, line endings) left byte for byte as it was.

Public API:
  utc_seconds(now) -> datetime                 `now` in UTC, truncated to whole seconds (what is written)
  stamp(t) -> str                              2026-12-07T10:11:12Z
  set_window_value(text, id, key, t) -> Edit   the file's text with experiment `id`'s `key` set to `t`
  change_window(env, stacks_dir, id, key, t) -> Edit
        validate the whole fleet with the change on a copy of the stacks (infra.config.load_fleet), then write the
        global stack file (atomically, after checking nobody changed it meanwhile); ExperimentError, with nothing
        written, when the change breaks a rule (an overlapping window, end before start, ...)

How the value is found: the file is composed with PyYAML (nodes with their positions in the text), the scalar under
config -> reco-dr:experiments -> [the item whose id is `id`] -> `key` is replaced in place in its own quoting style
("..." stays double-quoted, a plain value stays plain), and the result is parsed again and compared with the
original document: exactly that one value may differ, and it must read back as `t`.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from drills.errors import DrillError

EXPERIMENTS_KEY = "reco-dr:experiments"
WindowKey = Literal["start", "end"]


class WindowEditError(DrillError):
    """The stack file's experiment could not be edited safely, or the change breaks a rule: nothing was written."""

    exit_code = 2


@dataclass(frozen=True)
class Edit:
    """One value rewritten: `line` (1-based) of `path` held `old` (as written) and now holds `new`."""

    path: Path | None
    line: int
    key: str
    old: str
    new: str
    text: str  # the whole new text


def utc_seconds(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(microsecond=0)


def stamp(t: datetime) -> str:
    """ISO 8601 UTC with a Z, whole seconds unless `t` has a fraction."""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if not t.microsecond else t.isoformat().replace("+00:00", "Z")


def _get(node: yaml.Node, key: str, where: str) -> yaml.Node:
    if not isinstance(node, yaml.MappingNode):
        raise WindowEditError(f"{where}: a mapping expected (line {node.start_mark.line + 1})")
    found = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key]
    if len(found) != 1:
        raise WindowEditError(f"{where}: {'no' if not found else 'more than one'} key {key!r}")
    return found[0]


def _as_time(v: Any) -> datetime | None:
    if isinstance(v, datetime):
        return v
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v)
        except ValueError:
            return None
    return None


def set_window_value(text: str, experiment_id: str, key: WindowKey, t: datetime) -> Edit:
    """`text` (a stack file) with `key` of experiment `experiment_id` set to `stamp(t)`; WindowEditError when the
    value cannot be found, is written in a form not rewritten here, or the result is not exactly that change."""
    if key not in ("start", "end"):
        raise WindowEditError(f"only an experiment's start or end is rewritten, not {key!r}")
    if t.utcoffset() is None:
        raise WindowEditError(f"{key} = {t}: a UTC time expected, not a naive one")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        before = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise WindowEditError(f"the stack file is not valid YAML: {e}") from None
    if root is None:
        raise WindowEditError("the stack file is empty")
    seq = _get(_get(root, "config", "the stack file"), EXPERIMENTS_KEY, "config")
    if not isinstance(seq, yaml.SequenceNode):
        raise WindowEditError(f"config.{EXPERIMENTS_KEY}: a list expected (line {seq.start_mark.line + 1})")
    index = [
        i
        for i, item in enumerate(seq.value)
        if isinstance(item, yaml.MappingNode)
        and any(isinstance(k, yaml.ScalarNode) and k.value == "id" and v.value == experiment_id for k, v in item.value)
    ]
    if len(index) != 1:
        raise WindowEditError(f"{EXPERIMENTS_KEY}: {len(index)} experiments with id {experiment_id!r}, not one")
    i = index[0]
    where = f"{EXPERIMENTS_KEY}[{i}]"
    node = _get(seq.value[i], key, where)
    if not isinstance(node, yaml.ScalarNode) or node.style not in (None, '"', "'"):
        raise WindowEditError(
            f"{where}.{key} (line {node.start_mark.line + 1}): written as a plain or quoted scalar expected, "
            "not a block or a collection; edit it by hand"
        )
    a, b = node.start_mark.index, node.end_mark.index
    old = text[a:b]
    if node.start_mark.line != node.end_mark.line:
        raise WindowEditError(f"{where}.{key} (line {node.start_mark.line + 1}) spans lines; edit it by hand")
    value = stamp(t)
    new = f"{node.style}{value}{node.style}" if node.style else value
    out = text[:a] + new + text[b:]
    # Read back: the one value differs and reads as `t`; everything else parses as it did.
    after = yaml.safe_load(out)
    got = after["config"][EXPERIMENTS_KEY][i]
    if got.get("id") != experiment_id or _as_time(got.get(key)) != t:
        raise WindowEditError(f"{where}.{key}: rewriting {old!r} as {new!r} does not read back as {value}")
    expected = copy.deepcopy(before)
    expected["config"][EXPERIMENTS_KEY][i][key] = got[key]
    if expected != after:
        raise WindowEditError(f"{where}.{key}: rewriting {old!r} as {new!r} would change more than that value")
    return Edit(None, node.start_mark.line + 1, key, old, new, out)


def change_window(env: str, stacks_dir: Path, experiment_id: str, key: WindowKey, t: datetime) -> Edit:
    """Set experiment `experiment_id`'s `key` to `t` in `stacks_dir/Pulumi.<env>-global.yaml`, once the whole fleet
    validates with it (on a copy of the stacks); a ConfigError of that validation is a WindowEditError naming the
    change, and nothing is written."""
    from infra.config import ConfigError, load_fleet

    path = stacks_dir / f"Pulumi.{env}-global.yaml"
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WindowEditError(f"{path} is not UTF-8 ({e}); nothing written") from None
    edit = set_window_value(text, experiment_id, key, t)
    with tempfile.TemporaryDirectory(prefix="experiment-window-") as tmp:
        for f in stacks_dir.glob("Pulumi.*.yaml"):
            shutil.copy2(f, Path(tmp) / f.name)
        (Path(tmp) / path.name).write_bytes(edit.text.encode("utf-8"))
        try:
            fleet = load_fleet(env, Path(tmp))
        except ConfigError as e:
            raise WindowEditError(
                f"refused: experiment {experiment_id}: {key} = {stamp(t)} breaks a rule of the stacks, nothing "
                f"written: {e}"
            ) from None
    (changed,) = (e for e in fleet.glob.experiments if e.id == experiment_id)
    if getattr(changed, key) != t:
        raise WindowEditError(f"experiment {experiment_id}: {key} reads back as {getattr(changed, key)}, not {t}")
    if path.read_bytes() != raw:
        raise WindowEditError(f"{path} changed while this command ran; nothing written, run it again")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(edit.text.encode("utf-8"))
        shutil.copymode(path, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return Edit(path, edit.line, edit.key, edit.old, edit.new, edit.text)
