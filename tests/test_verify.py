"""`realign run --verify`: after the filter rules pass a rewrite, the model is asked whether
the rewrite keeps the original's content and answers the request; a no keeps the original
(rule `verify`, with the model's reason). Scripted backend: the verdicts are the test's."""

from __future__ import annotations

import json
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from packs import write_pack
from rich.console import Console
from typer.testing import CliRunner

from realign.cli import run_impl
from realign.cli.main import app
from realign.criteria import load_pack
from realign.llm import registry
from realign.llm.base import ChatRequest, ChatResponse
from realign.llm.fake import FakeBackend
from realign.pipeline.record import RunOptions, RunSummary
from realign.records import FilterDecision, Record, UnitMeta
from realign.stages.verify import VerifyOutput, verdict

runner = CliRunner()

ANSWERS = {
    "paris": ("What is the capital of France?", "The capital of France is Paris, on the Seine."),
    "everest": ("How high is Mount Everest?", "Mount Everest is 8,849 metres high, in Nepal."),
}


def sharegpt(ids: list[str]) -> str:
    rows = []
    for rid in ids:
        question, answer = ANSWERS[rid]
        human = {"from": "human", "value": question, "category": "open_qa"}
        rows.append({"id": rid, "items": [human, {"from": "gpt", "value": answer}]})
    return json.dumps(rows)


def between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def rewrite_answer(prompt: str) -> str:
    """A faithful rewrite: the whole original under a heading (every rule passes it)."""
    original = between(prompt, "<response>", "</response>")
    return json.dumps(
        {
            "reasoning": "lead with a heading",
            "format_fits": True,
            "response": f"**Answer**\n\n{original}",
        }
    )


def verify_answer(keeps: bool, answers: bool = True, reason: str = "") -> str:
    reason = reason or ("all facts kept" if keeps and answers else "the height is missing")
    return json.dumps({"keeps_content": keeps, "answers_instruction": answers, "reason": reason})


def scripted(verdicts: dict[str, str]) -> FakeBackend:
    """Rewrites every response faithfully; answers each verify request with the scripted
    verdict of its record (`verdicts[record id]`)."""

    def respond(req: ChatRequest) -> str:
        if req.stage == "rewrite":
            return rewrite_answer(req.messages[-1].content)
        if req.stage == "verify":
            assert req.record_id is not None
            return verdicts[req.record_id]
        raise AssertionError(f"unexpected stage {req.stage}")

    return FakeBackend(respond)


@pytest.fixture
def use_backend(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeBackend], None]:
    """`--backend fake` builds the given scripted backend."""

    def use(backend: FakeBackend) -> None:
        monkeypatch.setitem(registry._FACTORIES, "fake", lambda settings: backend)

    return use


def run_cli(tmp_path: Path, ids: list[str], *flags: str, out: str = "out.json") -> Any:
    src = tmp_path / "in.json"
    src.write_text(sharegpt(ids), encoding="utf-8")
    pack = tmp_path / "pack"
    if not pack.exists():
        write_pack(pack)
    argv = ["run", str(src), "-o", str(tmp_path / out), "--backend", "fake", "--pack", str(pack)]
    return runner.invoke(app, [*argv, *flags], env={"COLUMNS": "200"})


def units(tmp_path: Path, out: str = "out.json") -> dict[str, dict[str, Any]]:
    rows = json.loads((tmp_path / out).read_text(encoding="utf-8"))
    return {r["id"]: {**r["realign"]["units"][0], "record": r} for r in rows}


def flat(text: str) -> str:
    return " ".join(text.split())


def test_verify_keeps_the_original_when_the_model_says_no(tmp_path: Path, use_backend) -> None:
    backend = scripted(
        {
            "paris": verify_answer(True),
            "everest": verify_answer(False, reason="the rewrite drops the height 8,849 m"),
        }
    )
    use_backend(backend)
    res = run_cli(tmp_path, ["paris", "everest"], "--verify")
    assert res.exit_code == 0, res.output
    got = units(tmp_path)

    accepted = got["paris"]
    assert accepted["status"] == "rewritten"
    assert accepted["filter"]["rule"] == "passed" and accepted["filter"]["checked"][-1] == "verify"
    assert "verified: all facts kept" in accepted["filter"]["reason"]
    assert accepted["record"]["items"][1]["value"].startswith("**Answer**")

    rejected = got["everest"]
    assert rejected["status"] == "kept"
    decision = rejected["filter"]
    assert decision["rule"] == "verify" and decision["keep_original"] is True
    assert "the rewrite drops the height 8,849 m" in decision["reason"]
    assert "does not keep the original's content" in decision["reason"]
    assert rejected["reason"].startswith("verify: ")
    assert rejected["record"]["items"][1]["value"] == ANSWERS["everest"][1]  # the original

    stages = [c.stage for c in backend.calls]
    assert stages.count("verify") == 2 and stages.count("rewrite") == 2
    (req,) = [c for c in backend.calls if c.stage == "verify" and c.record_id == "everest"]
    shown = req.messages[-1].content
    assert ANSWERS["everest"][0] in shown and ANSWERS["everest"][1] in shown
    assert "**Answer**" in shown  # the rewrite is what is checked
    text = flat(res.output)
    assert "1 of 2 rewrite(s) accepted" in text and "verify 1" in text


def test_without_verify_no_request_is_sent_and_the_rules_decide(
    tmp_path: Path, use_backend
) -> None:
    backend = scripted({})  # a verify request would fail the test (KeyError)
    use_backend(backend)
    res = run_cli(tmp_path, ["paris", "everest"])
    assert res.exit_code == 0, res.output
    assert {u["status"] for u in units(tmp_path).values()} == {"rewritten"}
    assert "verify" not in {c.stage for c in backend.calls}
    assert all("verify" not in u["filter"]["checked"] for u in units(tmp_path).values())


def test_a_rerun_answers_verification_from_the_cache(tmp_path: Path, use_backend) -> None:
    verdicts = {"paris": verify_answer(True), "everest": verify_answer(False)}
    backend = scripted(verdicts)
    use_backend(backend)
    assert run_cli(tmp_path, ["paris", "everest"], "--verify").exit_code == 0
    first = units(tmp_path)
    backend.calls.clear()
    res = run_cli(tmp_path, ["paris", "everest"], "--verify", out="again.json")
    assert res.exit_code == 0, res.output
    assert backend.calls == []  # neither the rewrites nor their verification were sent again
    again = units(tmp_path, "again.json")
    assert [again[k]["filter"] for k in ANSWERS] == [first[k]["filter"] for k in ANSWERS]


def test_an_unusable_verification_keeps_the_original(tmp_path: Path, use_backend) -> None:
    use_backend(scripted({"paris": "not json at all"}))
    res = run_cli(tmp_path, ["paris"], "--verify")
    assert res.exit_code == 0, res.output  # kept, not a failed record
    (unit,) = units(tmp_path).values()
    assert unit["status"] == "kept" and unit["filter"]["rule"] == "verify"
    assert "no usable verification" in unit["filter"]["reason"]


def test_summary_says_why_no_rewrite_was_accepted(tmp_path: Path, use_backend) -> None:
    use_backend(scripted({k: verify_answer(False) for k in ANSWERS}))
    res = run_cli(tmp_path, list(ANSWERS), "--verify")
    assert res.exit_code == 0, res.output
    assert (
        "0 rewrites accepted: the filter kept every original (rules: verify 2); the model's "
        "rewrites lost content — use a stronger model" in flat(res.output)
    )


def summary_of(attempts: dict[str, int], rules: dict[str, int]) -> RunSummary:
    s = RunSummary()
    s.attempts.update(attempts)
    s.filter_rules.update(rules)
    return s


def test_acceptance_line_names_every_reason() -> None:
    line = run_impl.acceptance_line
    assert line(summary_of({}, {})) == "no rewrite tried"
    assert line(summary_of({"accepted": 3, "filter": 1}, {"passed": 3})) == (
        "3 of 4 rewrite(s) accepted"
    )
    zero = line(
        summary_of(
            {"filter": 3, "format": 2, "truncated": 1},
            {"length_ratio": 2, "meta_text": 1},
        ),
        "the embedded model",
    )
    assert zero.startswith("0 rewrites accepted: the filter kept every original ")
    assert "(rules: length_ratio 2, meta_text 1)" in zero
    assert "the embedded model's rewrites lost content" in zero
    assert "poor fit 2 time(s)" in zero and "1 rewrite(s) were cut off" in zero
    copied = line(summary_of({"filter": 2}, {"unchanged": 2}))
    assert "only copied the originals" in copied


def test_summary_count_tallies_units_by_outcome() -> None:
    def unit(status: str, rule: str | None = None, candidates: bool = True) -> UnitMeta:
        filt = None
        if rule is not None:
            filt = FilterDecision(keep_original=rule != "passed", rule=rule)
        cands = [{"response": "x", "tokens": 1}] if candidates else []
        return UnitMeta(turn=1, status=status, filter=filt, candidates=cands)  # type: ignore[arg-type]

    rec = Record.model_validate(
        {"id": "r", "index": 0, "turns": [{"role": "user", "content": "q"}], "source_format": "x"}
    )
    rec.meta.units = [
        unit("rewritten", "passed"),
        unit("kept", "verify"),
        unit("kept"),  # the model said the format does not fit
        unit("kept", candidates=False),  # truncated twice
        unit("skipped", candidates=False),
    ]
    s = RunSummary()
    s.count(rec)
    assert s.attempts == {"accepted": 1, "filter": 1, "format": 1, "truncated": 1}


def test_dry_run_counts_one_verify_request_per_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, tuple[int, int, int]]] = []
    from realign.llm import pricing

    real = pricing.estimate

    def capture(model: str, stages: list[Any]) -> Any:
        seen.append({s.stage: (s.requests, s.input_tokens, s.output_tokens) for s in stages})
        return real(model, stages)

    monkeypatch.setattr(pricing, "estimate", capture)
    res = run_cli(tmp_path, list(ANSWERS), "--dry-run", "--verify")
    assert res.exit_code == 0, res.output
    assert "verify" in res.output and "one per rewrite" in flat(res.output)
    res_off = run_cli(tmp_path, list(ANSWERS), "--dry-run")
    assert res_off.exit_code == 0, res_off.output
    on, off = seen
    assert "verify" not in off and on["rewrite"] == off["rewrite"]
    requests, tokens_in, tokens_out = on["verify"]
    assert requests == 2 and tokens_out > 0
    # The check shows the request, the original and the rewrite: more than the originals.
    assert tokens_in > 2 * 40
    assert not (tmp_path / "out.json").exists()


def test_verify_changes_the_run_fingerprint() -> None:
    assert RunOptions(verify=True).fingerprint_data() != RunOptions().fingerprint_data()


def pack_with_verify(tmp_path: Path) -> Path:
    pack = write_pack(tmp_path / "vpack")
    (pack / "pack.yaml").write_text("verify: true\n", encoding="utf-8")
    return pack


def options_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **flags: Any) -> tuple[bool, str]:
    """(RunOptions.verify, what was said on stderr) for `run` with these flags."""
    said = StringIO()
    monkeypatch.setattr(run_impl, "err", Console(file=said, width=200))
    pack = load_pack(str(pack_with_verify(tmp_path)))
    args = run_impl.RunArgs(input=tmp_path / "in.json", output=tmp_path / "o.json", **flags)
    return run_impl.run_options(args, pack).verify, said.getvalue()


def test_pack_verify_applies_but_not_to_the_embedded_model_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert options_for(tmp_path, monkeypatch, backend="fake") == (True, "")
    assert options_for(tmp_path, monkeypatch, backend="fake", verify=False)[0] is False
    on, said = options_for(tmp_path, monkeypatch, backend="local")
    assert on is False and "verify: true" in said and "--verify turns it on" in said
    assert options_for(tmp_path, monkeypatch, backend="local", verify=True) == (True, "")


def test_verdict_keeps_the_rules_decision_when_the_model_agrees() -> None:
    passed = FilterDecision(
        keep_original=False, rule="passed", reason="all rules passed", checked=["unchanged"]
    )
    yes = verdict(passed, VerifyOutput(keeps_content=True, answers_instruction=True, reason="ok"))
    assert not yes.keep_original and yes.rule == "passed" and yes.checked == ["unchanged", "verify"]
    off_topic = verdict(
        passed, VerifyOutput(keeps_content=True, answers_instruction=False, reason="other topic")
    )
    assert off_topic.keep_original and off_topic.rule == "verify"
    assert off_topic.reason == "does not answer the request: other topic"


def test_help_documents_verify_with_an_example() -> None:
    res = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    text = flat(res.output)
    assert "--verify" in text and "--no-verify" in text
    assert "realign run data.json -o out.json --model gpt-4o-mini --verify" in text


# ------------------------------------------------------------------ the Batch API path


@pytest.fixture(scope="module")
def vcr_config() -> dict:
    # Multipart uploads carry a random boundary: match on everything but the body.
    return {
        "filter_headers": ["authorization"],
        "match_on": ["method", "scheme", "host", "port", "path", "query"],
    }


def batch_answer(stage: str, body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    if stage == "rewrite":
        return rewrite_answer(prompt)
    assert stage == "verify", stage
    original = between(prompt, "<original>", "</original>")
    return verify_answer("Everest" not in original)  # the Everest rewrite is judged lossy


def collect_by_hand(job_id: str, stages: dict[str, str]) -> None:
    """What `realign batch collect` does with a completed batch: answers into the cache."""
    from realign.llm.batch import _input_path
    from realign.llm.cache import Cache

    cache = Cache()
    for line in _input_path(job_id).read_text().splitlines():
        req = json.loads(line)
        text = batch_answer(stages[req["custom_id"]], req["body"])
        cache.set(req["custom_id"], ChatResponse(texts=[text]).model_dump_json())
    cache.close()


@pytest.mark.vcr
def test_batch_run_verifies_in_a_round_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realign.llm.batch import list_jobs

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-batch-0123456789")
    src = tmp_path / "in.json"
    src.write_text(sharegpt(list(ANSWERS)), encoding="utf-8")  # typed: no classify round
    out = tmp_path / "out.json"
    pack = write_pack(tmp_path / "pack")
    cmd = ["run", str(src), "-o", str(out), "--batch", "--model", "gpt-4o-mini", "--verify"]
    cmd += ["--pack", str(pack)]

    def latest(stage: str) -> Any:
        (job,) = [j for j in list_jobs() if stage in j.stages.values()]
        return job

    first = runner.invoke(app, cmd)
    assert first.exit_code == 3, first.output
    job = latest("rewrite")
    assert sorted(job.stages.values()) == ["rewrite"] * 2
    collect_by_hand(job.batch_id, job.stages)

    second = runner.invoke(app, cmd)  # rewrites from the cache; their checks are queued
    assert second.exit_code == 3, second.output
    job = latest("verify")
    assert sorted(job.stages.values()) == ["verify"] * 2
    collect_by_hand(job.batch_id, job.stages)

    third = runner.invoke(app, cmd)  # everything from the cache: the output is written
    assert third.exit_code == 0, third.output
    got = units(tmp_path)
    assert got["paris"]["status"] == "rewritten"
    assert got["everest"]["status"] == "kept" and got["everest"]["filter"]["rule"] == "verify"


def test_criteria_validate_shows_a_packs_verify_setting(tmp_path: Path) -> None:
    res = runner.invoke(app, ["criteria", "validate", str(pack_with_verify(tmp_path))])
    assert res.exit_code == 0, res.output
    assert "pack.yaml is valid:" in res.output and "verify yes" in res.output
    res = runner.invoke(app, ["criteria", "validate", str(write_pack(tmp_path / "plain"))])
    assert res.exit_code == 0 and "verify" not in res.output  # off is not worth a word
