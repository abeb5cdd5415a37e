"""A pack carries its whole method (issue 22 items 2 and 3): `pack.yaml`'s filter preset,
model, retrieval and output limit take effect, flags override them, provenance names the pack,
its --criteria folder and its hash; the `alpaca` preset and exam rule; `--show-prompt`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import realign_checkout as rc
from typer.testing import CliRunner

from realign.cli.main import app
from realign.cli.run_impl import RunArgs, run_options
from realign.criteria import CriteriaError, load_pack
from realign.llm.fake import FakeBackend
from realign.llm.registry import register_backend
from realign.stages.filter import PRESETS, decide

runner = CliRunner()


def pack_dir(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "method"
    d.mkdir(exist_ok=True)
    (d / "pack.yaml").write_text(text)
    return d


def data_file(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    p = tmp_path / "in.json"
    p.write_text(json.dumps(records))
    return p


def rec(question: str, answer: str, category: str | None = None) -> dict[str, Any]:
    first: dict[str, Any] = {"from": "human", "value": question}
    if category:
        first["category"] = category
    return {"items": [first, {"from": "gpt", "value": answer}]}


def test_pack_settings_fill_the_flags_not_given(tmp_path: Path) -> None:
    d = pack_dir(
        tmp_path,
        "filter_preset: gsm8k\nmodel: pack-model\nretrieval: none\n"
        "retrieve_k: 3\nmax_tokens: 512\n",
    )
    pack = load_pack("realign", d)
    base = {"input": tmp_path / "i.json", "output": tmp_path / "o.json", "criteria": d}
    args = RunArgs(**base).with_pack(pack)
    assert (args.model, args.retrieval, args.filter_preset) == ("pack-model", "none", "gsm8k")
    opts = run_options(args, pack)
    assert (opts.filter_preset, opts.retrieve_k, opts.max_tokens) == ("gsm8k", 3, 512)
    flags = RunArgs(**base, model="flag-model", retrieval="serper", filter_preset="math")
    args = flags.with_pack(pack)
    assert (args.model, args.retrieval, args.filter_preset) == ("flag-model", "serper", "math")
    assert run_options(args, pack).filter_preset == "math"
    assert pack.folder == str(d)


def test_run_uses_the_packs_model_and_preset_and_records_the_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str | None] = []

    def factory(settings: Any) -> FakeBackend:
        seen.append(settings.model)
        return FakeBackend(model=settings.model or "none")

    register_backend("test-method-model", factory, replace=True)
    d = pack_dir(tmp_path, "filter_preset: no-robots\nmodel: pack-model\nretrieval: none\n")
    src = data_file(
        tmp_path, [rec("What is the capital of France?", "Paris is the capital.", "open_qa")]
    )
    out = tmp_path / "out.json"
    argv = ["run", str(src), "-o", str(out), "--backend", "test-method-model", "--no-cache"]
    res = runner.invoke(app, [*argv, "--criteria", str(d)])
    assert res.exit_code == 0, res.output
    assert seen == ["pack-model"]
    meta = json.loads(out.read_text())[0]["realign"]
    prov = meta["provenance"]
    assert prov["model"] == "pack-model" and prov["criteria_folder"] == str(d)
    assert prov["pack_hash"] == load_pack("realign", d).pack_hash
    assert prov["pack_hash"] != load_pack("realign").pack_hash  # the settings are in the hash
    assert meta["units"][0]["filter"]["preset"] == "no-robots"


def test_an_unknown_filter_preset_in_pack_yaml_is_a_usage_error(tmp_path: Path) -> None:
    d = pack_dir(tmp_path, "filter_preset: nonsense\n")
    src = data_file(tmp_path, [rec("q?", "a", "open_qa")])
    res = runner.invoke(
        app, ["run", str(src), "-o", str(tmp_path / "o.json"), "--criteria", str(d)]
    )
    assert res.exit_code == 2 and "nonsense" in res.output


def test_realign_text_pack_without_its_templates_names_them(tmp_path: Path) -> None:
    d = pack_dir(tmp_path, "answer_style: realign-text\n")
    with pytest.raises(CriteriaError, match=r"templates/rewrite_system\.txt"):
        load_pack("realign", d)
    (d / "templates").mkdir()
    (d / "templates" / "rewrite_sytem.txt").write_text("x")
    with pytest.raises(CriteriaError, match="unknown template 'rewrite_sytem'"):
        load_pack("realign", d)


# ---------------------------------------------------------------- filter


def test_alpaca_preset_keeps_a_short_exam_answer() -> None:
    long_rewrite = "The correct option is B, because the other options contradict the data. " * 2
    d = decide("Which option? A) x B) y", "B", long_rewrite, "exam_problem_solving_tutor", "alpaca")
    assert d.keep_original and d.rule == "exam_short_original"
    assert d.checked == list(PRESETS["alpaca"])
    d = decide(
        "Which option?", "Option B, y.", long_rewrite, "exam_problem_solving_tutor", "alpaca"
    )
    assert not d.keep_original  # 12 characters: the rule does not apply
    d = decide(
        "Name a colour.", "Red", "Red is a colour, often linked with heat.", "open_qa", "alpaca"
    )
    assert not d.keep_original  # other types: no exam rule
    code = "```python\nprint(1)\n```"
    d = decide(
        "Print one.",
        code,
        "Print one with the print function, nothing more.",
        "text_to_code_translation",
        "alpaca",
    )
    assert d.keep_original and d.rule == "code_mismatch"


# ---------------------------------------------------------------- --show-prompt


def test_show_prompt_prints_the_messages_and_sends_nothing(tmp_path: Path) -> None:
    root = rc.write_checkout(tmp_path / "ReAlign")
    pack = tmp_path / "pack"
    assert (
        runner.invoke(app, ["criteria", "import-realign", str(root), "-o", str(pack)]).exit_code
        == 0
    )
    backend = FakeBackend()
    register_backend("test-show", lambda s: backend, replace=True)
    src = data_file(
        tmp_path,
        [
            rec("Tell a tale.", "Once.", "story_generation"),
            rec("What is 6 times 7?", "42", "math_puzzles"),
        ],
    )
    out = tmp_path / "out.json"
    argv = ["run", str(src), "-o", str(out), "--backend", "test-show", "--criteria", str(pack)]
    res = runner.invoke(app, [*argv, "--show-prompt", "1"])
    assert res.exit_code == 0, res.output
    assert "task type: math_puzzles (from input)" in res.output
    assert rc.PROMPTS["REWRITING_SYSTEM_PROMPT"].strip() in res.output
    user = (
        rc.PROMPTS["REWRITING_USER_PROMPT"]
        .format(
            question="What is 6 times 7?",
            response="42",
            structure=rc.STRUCTURES["math_puzzles"].strip(),
        )
        .strip()
    )
    assert user in res.output
    assert "n=2, temperature=0.3, max_tokens=2048" in res.output
    assert backend.calls == [] and not out.exists()
    res = runner.invoke(app, [*argv, "--show-prompt", "0"])
    assert "not rewritten: criterion 'story_generation' says rewrite: no" in res.output
    res = runner.invoke(app, [*argv, "--show-prompt", "nope"])
    assert res.exit_code == 2 and "no record with that id" in res.output


def test_show_prompt_of_an_untyped_record_shows_the_classifier_request(tmp_path: Path) -> None:
    backend = FakeBackend()
    register_backend("test-show2", lambda s: backend, replace=True)
    src = data_file(tmp_path, [rec("Who painted the Sistine Chapel ceiling?", "Michelangelo.")])
    argv = ["run", str(src), "-o", str(tmp_path / "o.json"), "--backend", "test-show2"]
    res = runner.invoke(app, [*argv, "--show-prompt", "0"])
    assert res.exit_code == 0, res.output
    assert "the LLM classifier would be asked" in res.output
    assert "request: stage classify" in res.output and "Sistine" in res.output
    assert backend.calls == []


def test_show_prompt_with_the_json_style_shows_the_rendered_template(tmp_path: Path) -> None:
    backend = FakeBackend()
    register_backend("test-show3", lambda s: backend, replace=True)
    crit = tmp_path / "mine"
    crit.mkdir()
    text = load_pack()["open_qa"].path and Path(load_pack()["open_qa"].path).read_text()
    body_marker = "MY-EDITED-FORMAT: one line, then the answer."
    head, _, _ = text.partition("\n---\n")
    (crit / "open_qa.md").write_text(head + "\n---\n" + body_marker + "\n")
    src = data_file(tmp_path, [rec("Who wrote Hamlet?", "Shakespeare.", "open_qa")])
    argv = ["run", str(src), "-o", str(tmp_path / "o.json"), "--backend", "test-show3"]
    res = runner.invoke(
        app, [*argv, "--criteria", str(crit), "--retrieval", "serper", "--show-prompt", "0"]
    )
    assert res.exit_code == 0, res.output
    assert (
        body_marker in res.output
        and "a run would search serper for 'Who wrote Hamlet?'" in res.output
    )
    res = runner.invoke(
        app, [*argv, "--criteria", str(crit), "--retrieval", "none", "--show-prompt", "0"]
    )
    assert "evidence: none (retrieval is off)" in res.output
    assert "----- system -----" in res.output and backend.calls == []


def test_force_with_a_text_pack_lacking_its_force_templates_is_a_usage_error(
    tmp_path: Path,
) -> None:
    root = rc.write_checkout(tmp_path / "ReAlign")
    pack = tmp_path / "pack"
    assert (
        runner.invoke(app, ["criteria", "import-realign", str(root), "-o", str(pack)]).exit_code
        == 0
    )
    (pack / "templates" / "rewrite_force_system.txt").unlink()
    src = data_file(tmp_path, [rec("What is 6 times 7?", "42", "math_puzzles")])
    argv = ["run", str(src), "-o", str(tmp_path / "o.json"), "--criteria", str(pack), "--force"]
    res = runner.invoke(app, [*argv, "--backend", "fake", "--dry-run"])
    assert res.exit_code == 2 and "templates/rewrite_force_system.txt" in res.output
    res = runner.invoke(app, [*argv[:-1], "--backend", "fake", "--dry-run"])
    assert res.exit_code == 0, res.output  # without --force the pack is complete


def test_realign_search_style_searches_the_whole_instruction() -> None:
    import asyncio

    from realign.records import Evidence
    from realign.stages.retrieve import Retriever

    asked: list[str] = []

    class Provider:
        name = "stub"
        provider_id = "stub"

        async def search(self, query: str, k: int) -> list[Evidence]:
            asked.append(query)
            return [Evidence(snippet="An answer with several words in it.", provider="stub")]

    long = "Please read the following and answer: " + " ".join(f"word{i}" for i in range(50))
    long += " Who was the first emperor of Rome?"
    asyncio.run(Retriever(Provider(), whole_instruction=True).evidence_for(long))
    asyncio.run(Retriever(Provider()).evidence_for(long))
    assert asked[0] == long  # as ReAlign's retrieval.py asks
    assert asked[1] != long and len(asked[1].split()) <= 32  # realign's own query


def test_realign_text_rewrite_carries_each_replys_finish_reason() -> None:
    """A plain-text rewrite cut off at max_tokens reaches the filter as `length` (its
    `truncated` rule), as a structured rewrite does."""
    import asyncio

    from realign.llm.base import ChatRequest, Message
    from realign.llm.engine import Engine
    from realign.stages.rewrite_text import rewrite_text

    reply = "Reasoning: fits.\nRevised response: The answer is that the sky looks blue because"
    backend = FakeBackend(lambda r: [reply, reply[:60]], honour_max_tokens=True)

    async def go() -> list[str | None]:
        engine = Engine(backend, cache=None)
        request = ChatRequest(
            messages=[Message(role="user", content="rewrite")],
            stage="rewrite",
            max_tokens=16,  # 64 characters: the first reply is cut, the second is not
            n=2,
        )
        cands = await rewrite_text(engine, request)
        await engine.aclose()
        return [c.finish_reason for c in cands]

    assert asyncio.run(go()) == ["length", "stop"]
