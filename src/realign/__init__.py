"""realign: make SFT data better without collecting new data (ReAlign, production grade).

The Python API mirrors the CLI; see `realign.api` and the README.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("realign")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

# Imported lazily so `import realign` (and the CLI's --help) stays fast.
_API = {
    "run": "realign.cli.run_impl",  # the `realign run` command itself
    "realign_records": "realign.api",
    "arealign_records": "realign.api",
    "read_records": "realign.io.read",
    "RecordWriter": "realign.io.write",
    "load_pack": "realign.criteria",
    "Record": "realign.records",
    "Turn": "realign.records",
    "Failure": "realign.records",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> object:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'realign' has no attribute {name!r}")
