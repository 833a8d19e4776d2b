"""`python -m moto.server` with one memory fix, as the rehearsal runs it: `python -m drills.rehearsal.moto_server ARGS`.

moto 5.2.5's ListObjectVersions deep-copies every version of every key in the bucket on each call (bytes included:
FakeKey's __getstate__/__setstate__ copy the value into a new buffer), only to set `is_latest` on the copies, and
moto's BaseModel.__new__ appends every instance it makes, copies included, to a class-level list that is never
emptied. Every listing therefore keeps a full copy of the bucket: measured on this machine, 69 MB a call on a bucket
of 45 objects of 800 KB. The rehearsal's replication model lists every bucket every 0.2 s, so a 5-minute release
rehearsal took moto_server past 23 GB and the kernel's OOM killer stopped it mid-drill. Here the copies are views
(the key's attributes read through, `is_latest` their own), untracked and sharing nothing they could close.
The patch refuses to run, loudly, if moto's code is no longer the one it was written for.
"""

from __future__ import annotations

import copy
import inspect
import sys
import types
from typing import Any


def _patch_list_object_versions() -> None:
    from moto.s3 import models

    src = inspect.getsource(models)
    if src.count("deepcopy(") != 1 or "copy.deepcopy(version_key)" not in inspect.getsource(
        models.S3Backend.list_object_versions
    ):
        raise SystemExit(
            "drills.rehearsal.moto_server: moto.s3.models changed (expected its one copy.deepcopy in "
            "list_object_versions); re-check the ListObjectVersions memory fix against this moto version"
        )

    class VersionView:
        """A version as ListObjectVersions renders it: attributes read from the key; what the listing sets
        stays here."""

        def __init__(self, key: Any):
            self.__dict__["_key"] = key

        @property  # type: ignore[misc]  # a property standing in for __class__, which mypy types as a plain attribute
        def __class__(self) -> type:  # the listing tells versions from delete markers with isinstance
            return models.FakeKey

        def __getattr__(self, name: str) -> Any:
            return getattr(self.__dict__["_key"], name)

        def __setattr__(self, name: str, value: Any) -> None:
            self.__dict__[name] = value

    def view(versions: list[Any], memo: Any = None) -> list[Any]:
        # Delete markers own no bytes: copied as before.
        return [VersionView(v) if isinstance(v, models.FakeKey) else copy.deepcopy(v) for v in versions]

    shallow = types.ModuleType("copy")
    shallow.__dict__.update(copy.__dict__)
    shallow.deepcopy = view  # type: ignore[attr-defined]  # models' only deepcopy is list_object_versions' (checked above)
    models.copy = shallow


def main(argv: list[str]) -> None:
    _patch_list_object_versions()
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
