"""The bad-output corpus: a command that could not save its results stops before it reads its
input in full or sends a single request, with one `error:` line and exit 2, and writes nothing
(no output, no failures file, no run state, no store).

Every command that writes is run in process against a scripted endpoint that counts what it
is sent: the fake model (`FakeBackend`, its `calls`) and, for `retrieve`, a loopback server in
the Google format. Each bad output is checked with every command it applies to, next to a
control run with a good output that does send requests (so a count of 0 means something).

Also here, the rest of "one error style": option range errors as one line, `--dry-run`
reporting what the run could not read and the exit status the run would have, `convert`'s
exit status, `judge`'s advice for unreadable records, and no empty failures file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest
from local_http import serving
from packs import write_pack
from typer.testing import CliRunner, Result

from realign.cli.main import app
from realign.llm.fake import FakeBackend
from realign.pipeline.state import lock_run

runner = CliRunner()


def good(i: int) -> dict:
    return {"id": f"g{i}", "instruction": f"Who wrote book {i}?", "input": "", "output": f"A{i}."}


class _Search(BaseHTTPRequestHandler):
    """Google Custom Search's format; counts every request."""

    hits: ClassVar[int] = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        items = [{"title": "T", "link": "https://example.org/1", "snippet": "A useful fact."}]
        body = json.dumps({"kind": "customsearch#search", "items": items}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Endpoint:
    backend: FakeBackend
    search_url: str

    @property
    def requests(self) -> int:
        return len(self.backend.calls) + _Search.hits


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[Endpoint]:
    backend = FakeBackend()
    monkeypatch.setattr("realign.llm.build.make_backend", lambda opts, stderr=None: backend)
    monkeypatch.setenv("GOOGLE_API_KEY", "test-key")
    monkeypatch.setenv("GOOGLE_CSE_ID", "test-cx")
    _Search.hits = 0
    with serving(_Search) as url:
        yield Endpoint(backend, url)


@dataclass(frozen=True)
class Command:
    """How to run one command on `src` writing `out`, and what it has."""

    name: str
    argv: Callable[[Path, Path, Endpoint], list[object]]
    source: str = "in.jsonl"  # the input file it reads (written by `make_inputs`)
    ext: str = ".jsonl"  # a good output type
    paid: bool = True  # sends requests (the control run must count some)
    resumable: bool = True  # run state and lock beside the output, failures file
    output_format: tuple[str, ...] = ()  # the flag naming the output format, if any


def _pack(tmp: Path) -> Path:
    return tmp / "pack"


COMMANDS = [
    Command(
        "run",
        lambda s, o, e: ["run", s, "-o", o, "--backend", "fake", "--pack", _pack(s.parent)],
        output_format=("--output-format",),
    ),
    Command(
        "classify",
        lambda s, o, e: ["classify", s, "-o", o, "--backend", "fake", "--pack", _pack(s.parent)],
        output_format=("--output-format",),
    ),
    Command(
        "retrieve",
        lambda s, o, e: [
            *("retrieve", s, "-o", o, "--retrieval", "google", "--search-endpoint"),
            *(e.search_url, "--classifier", "none", "--all-types"),
        ],
    ),
    Command(
        "judge",
        lambda s, o, e: ["judge", s, "-o", o, "--backend", "fake", "--aspects", "readability"],
        source="in.json",
        ext=".json",
    ),
    Command(
        "filter",
        lambda s, o, e: ["filter", s, "-o", o, "--backend", "fake", "--aspect", "readability"],
        output_format=("--output-format",),
    ),
    Command(
        "rephrase",
        lambda s, o, e: ["rephrase", s, "-o", o, "--backend", "fake", "--styles", "easy"],
        source="docs.jsonl",
    ),
    Command(
        "generate",
        lambda s, o, e: ["generate", s, "-o", o, "--backend", "fake", "--per-chunk", "1"],
        source="docs.jsonl",
        output_format=("--output-format",),
    ),
    Command(
        "convert",
        lambda s, o, e: ["convert", s, o],
        paid=False,
        resumable=False,
        output_format=("--output-format",),
    ),
    Command(
        "report",
        lambda s, o, e: ["report", s, "--html", o],
        ext=".html",
        paid=False,
        resumable=False,
    ),
]
BY_NAME = {c.name: c for c in COMMANDS}
STORE = ("run", "classify", "retrieve", "judge", "filter", "rephrase", "generate")
RESUMABLE = STORE


def make_inputs(tmp: Path) -> None:
    rows = [good(i) for i in range(3)]
    (tmp / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "in.json").write_text(json.dumps(rows))
    docs = [{"id": "d1", "text": "The Moon has phases. A cycle takes 29.5 days."}]
    (tmp / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    write_pack(tmp / "pack")


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its content (None for a folder)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = None if p.is_dir() else p.read_bytes()
    return out


def invoke(*args: object, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, [str(a) for a in args], env=env)


def error_lines(res: Result) -> list[str]:
    return [x for x in res.stderr.splitlines() if x.startswith("error:")]


def assert_one_error(res: Result, expect: str) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "╭" not in res.output, res.output
    errors = error_lines(res)
    assert len(errors) == 1, res.stderr
    assert expect in " ".join(res.stderr.split()), res.stderr


# ---------------------------------------------------------------- the bad outputs


@dataclass(frozen=True)
class BadOutput:
    """`setup(tmp, command)` makes the situation and returns the `-o` path (plus extra
    arguments); `expect` must be in the error line."""

    name: str
    setup: Callable[[Path, Command], tuple[Path, list[str]]]
    expect: str
    commands: tuple[str, ...] = tuple(c.name for c in COMMANDS)


def _unknown_type(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    return tmp / "out.csv", []


def _no_extension(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    return tmp / "out", []


def _parent_is_a_file(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    (tmp / "file.txt").write_text("not a folder\n")
    return tmp / "file.txt" / f"out{cmd.ext}", []


def _grandparent_is_a_file(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    (tmp / "file.txt").write_text("not a folder\n")
    return tmp / "file.txt" / "sub" / f"out{cmd.ext}", []


def _output_is_a_folder(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    (tmp / f"dir{cmd.ext}").mkdir()
    return tmp / f"dir{cmd.ext}", []


def _output_is_the_input(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    return tmp / cmd.source, []


def _output_is_a_link_to_the_input(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    link = tmp / f"link{Path(cmd.source).suffix}"
    os.link(tmp / cmd.source, link)
    return link, []


def _failures_file_is_the_input(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    """`-o out.jsonl` writes `out.failures.jsonl` beside it: here that is the input (a second
    name of it, as when a run's failures are fed back in with the same -o)."""
    os.link(tmp / cmd.source, tmp / "out.failures.jsonl")
    return tmp / f"out{cmd.ext}", []


def _dev_null(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    return Path("/dev/null"), []


def _unwritable_folder(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    return Path("/sys") / "realign-test" / f"out{cmd.ext}", []  # even root cannot write there


def _name_too_long(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    # Fits alone (250 bytes) but not with what realign writes beside it.
    return tmp / ("x" * (250 - len(cmd.ext)) + cmd.ext), []


def _unknown_output_format(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    return tmp / f"out{cmd.ext}", [cmd.output_format[0], "yaml"]


def _fields_without_mapping(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    return tmp / f"out{cmd.ext}", [cmd.output_format[0], "fields"]


def _home_is_a_file(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    home = Path(os.environ["REALIGN_HOME"])
    home.write_text("a file where realign keeps its store\n")
    return tmp / f"out{cmd.ext}", []


def _cache_is_not_a_cache(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    home = Path(os.environ["REALIGN_HOME"])
    home.mkdir()
    (home / "cache.sqlite").write_text("this is not SQLite\n")
    return tmp / f"out{cmd.ext}", []


def _cache_is_a_folder(tmp: Path, cmd: Command) -> tuple[Path, list[str]]:
    (Path(os.environ["REALIGN_HOME"]) / "cache.sqlite").mkdir(parents=True)
    return tmp / f"out{cmd.ext}", []


WITH_FORMAT = tuple(c.name for c in COMMANDS if c.output_format)
WITH_FIELDS_FORMAT = ("run", "classify", "filter", "convert")  # generate offers no `fields`
BAD_OUTPUTS = [
    BadOutput("unknown_type", _unknown_type, "unknown output type '.csv'"),
    BadOutput("no_extension", _no_extension, "no file type (extension)"),
    BadOutput("parent_is_a_file", _parent_is_a_file, "file.txt is a file, not a folder"),
    BadOutput("grandparent_is_a_file", _grandparent_is_a_file, "file.txt is a file, not a folder"),
    BadOutput("output_is_a_folder", _output_is_a_folder, "is a folder; name a file in it"),
    BadOutput(
        "output_is_the_input",
        _output_is_the_input,
        "would overwrite the input",
        tuple(c for c in BY_NAME if c != "report"),  # an .html output is never a dataset
    ),
    BadOutput(
        "output_is_a_hard_link_to_the_input",
        _output_is_a_link_to_the_input,
        "would overwrite the input",
        tuple(c for c in BY_NAME if c != "report"),
    ),
    BadOutput(
        "failures_file_is_the_input",
        _failures_file_is_the_input,
        "out.failures.jsonl (written beside",
        tuple(c for c in RESUMABLE if c != "judge"),  # the judge keeps failures in its output
    ),
    BadOutput("dev_null", _dev_null, "is not a regular file"),
    BadOutput("unwritable_folder", _unwritable_folder, "cannot write in the folder /sys"),
    BadOutput("name_too_long", _name_too_long, "the name is too long"),
    BadOutput("unknown_output_format", _unknown_output_format, "'yaml'", WITH_FORMAT),
    BadOutput(
        "fields_format_without_mapping",
        _fields_without_mapping,
        "--output-format fields needs",
        WITH_FIELDS_FORMAT,
    ),
    BadOutput("realign_home_is_a_file", _home_is_a_file, "is not a folder", STORE),
    BadOutput("cache_is_not_sqlite", _cache_is_not_a_cache, "not a realign cache", STORE),
    BadOutput("cache_is_a_folder", _cache_is_a_folder, "cache.sqlite is a folder", STORE),
]


@pytest.mark.parametrize(
    "case, command",
    [(c, BY_NAME[n]) for c in BAD_OUTPUTS for n in c.commands],
    ids=lambda x: x.name,
)
@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])  # the counting search server
def test_bad_output_stops_before_any_request_and_writes_nothing(
    tmp_path: Path, endpoint: Endpoint, case: BadOutput, command: Command
) -> None:
    make_inputs(tmp_path)
    out, extra = case.setup(tmp_path, command)
    before = snapshot(tmp_path)
    res = invoke(*command.argv(tmp_path / command.source, out, endpoint), *extra)
    assert_one_error(res, case.expect)
    assert endpoint.requests == 0
    assert snapshot(tmp_path) == before  # no output, failures, state, lock or store


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])
def test_control_a_good_output_is_written_and_paid_for(
    tmp_path: Path, endpoint: Endpoint, command: Command
) -> None:
    """The same commands with a good output (in a folder made on the way): they run, so
    the zero counts above are the checks' doing."""
    make_inputs(tmp_path)
    out = tmp_path / "new" / "sub" / f"out{command.ext}"
    res = invoke(*command.argv(tmp_path / command.source, out, endpoint))
    assert res.exit_code == 0, res.output
    assert out.is_file()
    assert (endpoint.requests > 0) == command.paid
    assert not list(out.parent.glob(".*realign-state*"))  # the state went with the run


@pytest.mark.parametrize("command", [BY_NAME[n] for n in RESUMABLE], ids=lambda c: c.name)
@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])
def test_an_output_locked_by_another_run_stops_before_any_request(
    tmp_path: Path, endpoint: Endpoint, command: Command
) -> None:
    make_inputs(tmp_path)
    out = tmp_path / f"out{command.ext}"
    lock = lock_run(out)  # another run writing the same output
    try:
        before = snapshot(tmp_path)
        res = invoke(*command.argv(tmp_path / command.source, out, endpoint))
        assert_one_error(res, f"another realign run is writing {out} (pid {os.getpid()} ")
        assert endpoint.requests == 0 and snapshot(tmp_path) == before
    finally:
        lock.release(remove=True)


@pytest.mark.parametrize("command", [BY_NAME[n] for n in ("run", "filter", "rephrase")])
@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])
def test_dry_run_checks_the_output_too(
    tmp_path: Path, endpoint: Endpoint, command: Command
) -> None:
    """A dry run says what the run would do: with an output it could not write, exit 2."""
    make_inputs(tmp_path)
    argv = command.argv(tmp_path / command.source, tmp_path / "out.csv", endpoint)
    res = invoke(*argv, "--dry-run")
    assert_one_error(res, "unknown output type '.csv'")


@pytest.mark.parametrize("command", ["retrieve", "run"])
def test_the_output_must_not_overwrite_the_local_search_corpus(
    tmp_path: Path, endpoint: Endpoint, command: str
) -> None:
    make_inputs(tmp_path)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "c1", "text": "Book 1 was written by A1."}) + "\n")
    before = snapshot(tmp_path)
    args: list[object] = [command, tmp_path / "in.jsonl", "-o", corpus]
    args += ["--retrieval", f"local:{corpus}"]
    if command == "run":
        args += ["--backend", "fake", "--pack", tmp_path / "pack"]
    res = invoke(*args)
    assert_one_error(res, f"would overwrite the input {corpus}")
    assert endpoint.requests == 0 and snapshot(tmp_path) == before


def test_judge_writes_one_json_document(tmp_path: Path, endpoint: Endpoint) -> None:
    make_inputs(tmp_path)
    res = invoke("judge", tmp_path / "in.json", "-o", tmp_path / "s.jsonl", "--backend", "fake")
    assert_one_error(res, "unknown output type '.jsonl'; use .json")
    assert endpoint.requests == 0


# ---------------------------------------------------------------- one error style


@pytest.mark.parametrize(
    "command, option, value",
    [
        ("run", "--workers", "0"),
        ("run", "--concurrency", "-3"),
        ("run", "--limit", "0"),
        ("run", "--max-cost", "-5"),
        ("run", "--min-confidence", "2"),
        ("classify", "--limit", "0"),
        ("filter", "--max-cost", "-5"),
        ("filter", "--min-score", "11"),
        ("rephrase", "--concurrency", "0"),
        ("generate", "--per-chunk", "0"),
        ("judge", "--resamples", "5"),
        ("retrieve", "--k", "0"),
    ],
)
@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])
def test_an_option_out_of_range_is_one_error_line(
    tmp_path: Path, endpoint: Endpoint, command: str, option: str, value: str
) -> None:
    make_inputs(tmp_path)
    cmd = BY_NAME[command]
    before = snapshot(tmp_path)
    res = invoke(
        *cmd.argv(tmp_path / cmd.source, tmp_path / f"out{cmd.ext}", endpoint), option, value
    )
    assert_one_error(res, f"Invalid value for '{option}'")
    assert f"{command} --help`)" in res.stderr  # where to look, on the same line
    assert endpoint.requests == 0 and snapshot(tmp_path) == before


def test_a_missing_option_and_an_unknown_one_are_one_error_line(tmp_path: Path) -> None:
    make_inputs(tmp_path)
    assert_one_error(invoke("run", tmp_path / "in.jsonl"), "Missing option '-o'")
    assert_one_error(
        invoke("run", tmp_path / "in.jsonl", "-o", tmp_path / "o.jsonl", "--bogus"),
        "No such option: --bogus",
    )
    assert_one_error(invoke("nosuchcommand"), "No such command 'nosuchcommand'")
    res = invoke("run")  # no arguments at all: the help, as before
    assert "Usage" in res.output and not error_lines(res)


# ---------------------------------------------------------------- dry run tells the truth


def _unreadable_lines(n: int) -> str:
    return "".join(f'{{"id": "b{i}", "instruction": "q", "output": \n' for i in range(n))


def test_dry_run_reads_every_record_and_says_the_run_would_fail_them(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    make_inputs(tmp_path)
    src = tmp_path / "bad.jsonl"
    src.write_text(_unreadable_lines(30))
    argv = BY_NAME["run"].argv(src, tmp_path / "out.jsonl", endpoint)
    res = invoke(*argv, "--dry-run")
    said = " ".join(res.stderr.split())
    assert res.exit_code == 1, res.output  # the run's own exit status
    assert "30 of 30 records cannot be read" in said and "exit with status 1" in said
    assert said.count("malformed JSON") == 5 and "… and 25 more" in said
    assert f"{src}:1:" in said  # each named by file and line
    assert endpoint.requests == 0 and not (tmp_path / "out.jsonl").exists()
    # The run agrees: every record is a load failure, exit 1.
    res = invoke(*argv)
    assert res.exit_code == 1
    fails = (tmp_path / "out.failures.jsonl").read_text().splitlines()
    assert len(fails) == 30 and all(json.loads(f)["stage"] == "load" for f in fails)


def test_dry_run_of_a_clean_input_exits_0_and_counts_every_record(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    make_inputs(tmp_path)
    src = tmp_path / "in.jsonl"
    res = invoke(*BY_NAME["run"].argv(src, tmp_path / "out.jsonl", endpoint), "--dry-run")
    assert res.exit_code == 0, res.output
    assert "all 3 records can be read" in " ".join(res.stderr.split())
    assert endpoint.requests == 0


@pytest.mark.parametrize("command", ["filter", "run"])
def test_dry_run_of_mixed_records_names_the_unreadable_ones(
    tmp_path: Path, endpoint: Endpoint, command: str
) -> None:
    make_inputs(tmp_path)
    src = tmp_path / "mixed.jsonl"
    src.write_text((tmp_path / "in.jsonl").read_text() + _unreadable_lines(1))
    cmd = BY_NAME[command]
    res = invoke(*cmd.argv(src, tmp_path / "out.jsonl", endpoint), "--dry-run")
    said = " ".join(res.stderr.split())
    assert res.exit_code == 1, res.output
    assert "1 of 4 records cannot be read" in said and f"{src}:4:" in said
    assert endpoint.requests == 0


def test_dry_run_of_documents_names_the_unusable_ones(tmp_path: Path, endpoint: Endpoint) -> None:
    make_inputs(tmp_path)
    src = tmp_path / "docs.jsonl"
    src.write_text(src.read_text() + '{"id": "empty", "text": 7}\n')
    res = invoke(*BY_NAME["rephrase"].argv(src, tmp_path / "o.jsonl", endpoint), "--dry-run")
    said = " ".join(res.stderr.split())
    assert res.exit_code == 1, res.output
    assert "1 document(s) cannot be read" in said and "(id empty)" in said
    assert endpoint.requests == 0


# ---------------------------------------------------------------- exit statuses and advice


def test_convert_exits_1_when_a_record_is_rejected_like_run(tmp_path: Path) -> None:
    make_inputs(tmp_path)
    src = tmp_path / "mixed.jsonl"
    src.write_text((tmp_path / "in.jsonl").read_text() + _unreadable_lines(1))
    res = invoke("convert", src, tmp_path / "o.json")
    assert res.exit_code == 1, res.output
    assert [r["id"] for r in json.loads((tmp_path / "o.json").read_text())] == ["g0", "g1", "g2"]
    assert len((tmp_path / "o.rejected.jsonl").read_text().splitlines()) == 1
    res = invoke("convert", tmp_path / "in.jsonl", tmp_path / "o2.json")
    assert res.exit_code == 0 and not (tmp_path / "o2.rejected.jsonl").exists()


def test_judge_says_unreadable_records_need_fixing_not_a_rerun(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    make_inputs(tmp_path)
    src = tmp_path / "mixed.jsonl"
    src.write_text((tmp_path / "in.jsonl").read_text() + _unreadable_lines(1))
    res = invoke(*BY_NAME["judge"].argv(src, tmp_path / "s.json", endpoint))
    said = " ".join(res.stderr.split())
    assert res.exit_code == 1, res.output
    assert "1 record(s) could not be read" in said and "fix them in the input" in said
    assert "retry" not in said
    assert json.loads((tmp_path / "s.json").read_text())["read_errors"]


def test_run_leaves_no_empty_failures_file(tmp_path: Path, endpoint: Endpoint) -> None:
    make_inputs(tmp_path)
    out = tmp_path / "out.jsonl"
    fails = tmp_path / "out.failures.jsonl"
    fails.write_text('{"stale": "from an earlier run"}\n')
    res = invoke(*BY_NAME["run"].argv(tmp_path / "in.jsonl", out, endpoint))
    assert res.exit_code == 0, res.output
    assert len(out.read_text().splitlines()) == 3 and not fails.exists()
    assert "failures" not in res.stderr  # the summary names no failures file
