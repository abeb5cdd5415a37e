"""Criteria packs: the built-in files, the loader's errors, user overrides, and `realign criteria`."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from realign.cli.main import app
from realign.criteria import (
    MIN_EXAMPLES,
    CriteriaError,
    builtin_criteria_root,
    criterion_warnings,
    dump_criterion,
    load_dir,
    load_pack,
    new_criterion_text,
    numeric_answer,
    parse_criterion,
)

# The 46 ReAlign task types, as listed in the issue.
REALIGN_TYPES = [
    "question_generation",
    "story_generation",
    "poem_generation",
    "email_generation",
    "data_generation",
    "advice_giving",
    "recommendations",
    "how_to_generation",
    "planning",
    "instructional_rewriting",
    "language_polishing",
    "paraphrasing",
    "text_correction",
    "code_correction",
    "code_simplification",
    "information_extraction",
    "keywords_extraction",
    "table_extraction",
    "title_generation",
    "text_summarization",
    "note_summarization",
    "explain_code",
    "explain_answer",
    "text_to_text_translation",
    "text_to_code_translation",
    "code_to_code_translation",
    "code_to_text_translation",
    "open_qa",
    "closed_qa",
    "fill_in_the_blank",
    "fact_verification",
    "math_puzzles",
    "language_learning_questions",
    "natural_language_learning_tutor",
    "exam_problem_solving_tutor",
    "ml_ai_language_model_tutor",
    "general_classification",
    "ordering",
    "sentiment_analysis",
    "code_language_classification",
    "language_classification",
    "topic_classification",
    "value_judgement",
    "rejecting",
    "roleplay",
    "default",
]
RETRIEVAL_TYPES = {
    "how_to_generation",
    "open_qa",
    "fact_verification",
    "recommendations",
    "explain_answer",
}
MUST_NOT_REWRITE = {
    "story_generation", "poem_generation", "roleplay", "text_summarization", "note_summarization",
    "title_generation", "paraphrasing", "advice_giving", "default",
}  # fmt: skip

runner = CliRunner()


def words(text: str) -> int:
    return len(text.split())


# ---------------------------------------------------------------- the built-in realign pack


@pytest.fixture(scope="module")
def realign_pack():
    return load_pack()


def test_builtin_pack_has_exactly_the_46_types(realign_pack) -> None:
    assert len(REALIGN_TYPES) == 46
    assert realign_pack.name == "realign"
    assert sorted(realign_pack.names()) == sorted(REALIGN_TYPES)


def test_each_file_is_named_after_its_criterion(realign_pack) -> None:
    folder = builtin_criteria_root() / "realign"
    assert sorted(p.stem for p in folder.glob("*.md")) == sorted(REALIGN_TYPES)
    for name in realign_pack.names():
        assert Path(realign_pack[name].path).stem == name


def test_retrieval_and_rewrite_defaults(realign_pack) -> None:
    with_retrieval = {n for n in realign_pack.names() if realign_pack[n].retrieval}
    assert with_retrieval == RETRIEVAL_TYPES
    not_rewritten = {n for n in realign_pack.names() if not realign_pack[n].rewrite}
    assert not_rewritten >= MUST_NOT_REWRITE
    # Every type that is not rewritten says why.
    for n in not_rewritten:
        assert len(realign_pack[n].note) > 30, n
    # Retrieval only makes sense for types whose responses are rewritten with the evidence.
    assert all(realign_pack[n].rewrite for n in RETRIEVAL_TYPES)


def test_builtin_files_meet_the_authoring_rules(realign_pack) -> None:
    descriptions = set()
    for n in realign_pack.names():
        c = realign_pack[n]
        assert 80 <= words(c.format) <= 250, f"{n}: body has {words(c.format)} words"
        assert len(c.examples) >= 15, n
        assert "\n" not in c.description and c.description not in descriptions, n
        descriptions.add(c.description)
        assert criterion_warnings(c) == [], n


def test_math_formats_keep_the_gsm8k_final_answer(realign_pack) -> None:
    for n in ("math_puzzles", "exam_problem_solving_tutor"):
        assert "#### N" in realign_pack[n].format


def test_examples_are_not_near_duplicates_across_types(realign_pack) -> None:
    # The embedding classifier trains on these examples: a shared example would blur two classes.
    items = [
        (n, set(re.findall(r"[a-z0-9']+", e.lower())))
        for n in realign_pack.names()
        for e in realign_pack[n].examples
    ]
    for (n1, s1), (n2, s2) in itertools.combinations(items, 2):
        if n1 != n2:
            overlap = len(s1 & s2) / len(s1 | s2)
            assert overlap < 0.7, (n1, n2, sorted(s1 & s2))


def test_dump_and_parse_round_trip(realign_pack) -> None:
    for n in realign_pack.names():
        c = realign_pack[n]
        assert parse_criterion(dump_criterion(c), c.path) == c


@pytest.mark.parametrize("pack", ["realign", "realign-paper"])
def test_the_math_types_of_the_builtin_packs_have_numeric_answers(pack: str) -> None:
    loaded = load_pack(pack)
    numeric = {n for n in loaded.names() if loaded[n].answer == "numeric"}
    assert numeric == {"math_puzzles", "exam_problem_solving_tutor"}
    assert numeric_answer("math_puzzles", loaded) and not numeric_answer("open_qa", loaded)
    assert numeric_answer("math_puzzles") and not numeric_answer(None)  # no pack: built-in


def test_answer_field_validates_round_trips_and_keeps_old_hashes(realign_pack) -> None:
    text = (builtin_criteria_root() / "realign" / "open_qa.md").read_text(encoding="utf-8")
    # Not saying `answer:` means text, and hashes as before the field existed.
    assert parse_criterion(text).answer == "text"
    assert parse_criterion(text).content_hash == "61d25841b6ffe372"
    numeric = text.replace("retrieval: yes\n", "retrieval: yes\nanswer: numeric\n", 1)
    crit = parse_criterion(numeric)
    assert crit.answer == "numeric" and crit.content_hash != "61d25841b6ffe372"
    assert "answer: numeric" in dump_criterion(crit)
    assert "answer:" not in dump_criterion(parse_criterion(text))
    with pytest.raises(CriteriaError, match=r"field 'answer'.*fix: use one of the values"):
        parse_criterion(text.replace("retrieval: yes\n", "retrieval: yes\nanswer: number\n", 1))


def test_a_user_pack_decides_which_answers_are_numeric(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    src = builtin_criteria_root() / "realign"
    plain = (src / "math_puzzles.md").read_text(encoding="utf-8").replace("answer: numeric\n", "")
    (own / "math_puzzles.md").write_text(plain, encoding="utf-8")
    tagged = (src / "open_qa.md").read_text(encoding="utf-8")
    (own / "open_qa.md").write_text(
        tagged.replace("retrieval: yes\n", "retrieval: yes\nanswer: numeric\n", 1), "utf-8"
    )
    pack = load_pack("realign", own)
    assert not numeric_answer("math_puzzles", pack) and numeric_answer("open_qa", pack)
    # A type the pack lacks falls back to the built-in pack.
    assert numeric_answer("exam_problem_solving_tutor", pack.model_copy(update={"criteria": {}}))


# ---------------------------------------------------------------- the WRAP pack


def test_wrap_pack_has_the_four_styles() -> None:
    wrap = load_pack("wrap")
    assert wrap.names() == ["easy", "hard", "medium", "qa"]
    for n in wrap.names():
        c = wrap[n]
        assert (c.group, c.rewrite, c.retrieval) == ("wrap", True, False)
        assert len(c.examples) >= MIN_EXAMPLES
        assert 80 <= words(c.format) <= 250
    assert "Question:" in wrap["qa"].format and "Answer:" in wrap["qa"].format


# ---------------------------------------------------------------- broken copies

OPEN_QA = builtin_criteria_root() / "realign" / "open_qa.md"


def _drop_line(prefix: str) -> Callable[[str], str]:
    return lambda t: "\n".join(ln for ln in t.split("\n") if not ln.startswith(prefix))


def _keep_examples(k: int) -> Callable[[str], str]:
    def edit(text: str) -> str:
        head, body = text.split("\nexamples:\n", 1)
        examples, rest = body.split("\n---\n", 1)
        kept = [ln for ln in examples.split("\n") if ln.startswith("  - ")][:k]
        return head + "\nexamples:\n" + "\n".join(kept) + "\n---\n" + rest

    return edit


BROKEN: dict[str, tuple[Callable[[str], str], str, str]] = {
    # case: (edit of open_qa.md, field named in the error, words of the fix)
    "missing field": (_drop_line("group:"), "group", "add the field"),
    "unknown field": (
        lambda t: t.replace("retrieval: yes", "retrieval: yes\ncolour: blue"),
        "colour",
        "remove it",
    ),
    "too few examples": (_keep_examples(MIN_EXAMPLES - 1), "examples", f"at least {MIN_EXAMPLES}"),
    "bad yes/no": (lambda t: t.replace("rewrite: yes", "rewrite: maybe"), "rewrite", "yes or no"),
    "name mismatch": (
        lambda t: t.replace("name: open_qa", "name: open_qa2"),
        "name",
        "rename the file",
    ),
    "unparsable yaml": (
        lambda t: t.replace("group: question_answering", "group: [question_answering"),
        "line 3",
        "quoting and indentation",
    ),
    "multi-line description": (
        lambda t: re.sub(r'description: "([^"]*)"', r'description: "\1\\nsecond line"', t),
        "description",
        "single line",
    ),
    "rewrite without a format": (
        lambda t: t.split("\n---\n", 1)[0] + "\n---\n",
        "format",
        "rewrite: no",
    ),
}


@pytest.fixture
def broken_copy(tmp_path: Path) -> Callable[[str], Path]:
    def make(case: str) -> Path:
        folder = tmp_path / "pack"
        shutil.copytree(builtin_criteria_root() / "realign", folder)
        edit = BROKEN[case][0]
        target = folder / "open_qa.md"
        new_text = edit(target.read_text(encoding="utf-8"))
        assert new_text != target.read_text(encoding="utf-8"), "the edit must change the file"
        target.write_text(new_text, encoding="utf-8")
        return folder

    return make


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_copy_fails_naming_file_and_field(case: str, broken_copy) -> None:
    folder = broken_copy(case)
    _, field, fix = BROKEN[case]
    with pytest.raises(CriteriaError) as err:
        load_dir(folder)
    message = str(err.value)
    assert "open_qa.md" in message and field in message and fix in message
    assert len(message.splitlines()) == 1, "only the broken file is reported"

    result = runner.invoke(app, ["criteria", "validate", str(folder)])
    assert result.exit_code == 1
    assert "open_qa.md" in result.stderr and field in result.stderr
    assert "ok:" not in result.stdout


def test_validate_lists_every_broken_file(tmp_path: Path) -> None:
    folder = tmp_path / "pack"
    shutil.copytree(builtin_criteria_root() / "realign", folder)
    for name, case in (("open_qa", "bad yes/no"), ("planning", "missing field")):
        p = folder / f"{name}.md"
        p.write_text(BROKEN[case][0](p.read_text(encoding="utf-8")), encoding="utf-8")
    result = runner.invoke(app, ["criteria", "validate", str(folder)])
    assert result.exit_code == 1
    assert "open_qa.md: field 'rewrite'" in result.stderr
    assert "planning.md: field 'group'" in result.stderr
    assert "2 error(s)" in result.stderr


def test_parser_tolerates_bom_crlf_and_indented_dashes() -> None:
    text = OPEN_QA.read_text(encoding="utf-8")
    crit = parse_criterion("\ufeff" + text.replace("\n", "\r\n"), str(OPEN_QA))
    assert crit == parse_criterion(text, str(OPEN_QA))
    # A block-scalar example may contain a '---' line: only an unindented one closes the header.
    with_rule = text.replace(
        "examples:\n", "examples:\n  - |-\n    Above the line\n    ---\n    below\n", 1
    )
    assert "    ---\n" in with_rule
    assert "Above the line\n---\nbelow" in parse_criterion(with_rule, str(OPEN_QA)).examples


def test_header_must_open_and_close() -> None:
    with pytest.raises(CriteriaError, match="must start with a YAML header"):
        parse_criterion("name: x\n", "x.md")
    with pytest.raises(CriteriaError, match="not closed"):
        parse_criterion("---\nname: x\n", "x.md")


# ---------------------------------------------------------------- user overrides and packs


def _write_criterion(folder: Path, name: str, description: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    base = parse_criterion(OPEN_QA.read_text(encoding="utf-8"), str(OPEN_QA))
    crit = base.model_copy(update={"name": name, "description": description, "path": ""})
    (folder / f"{name}.md").write_text(dump_criterion(crit), encoding="utf-8")


def test_user_folder_overrides_and_extends_by_name(tmp_path: Path, realign_pack) -> None:
    user = tmp_path / "mine"
    _write_criterion(user, "open_qa", "My own open questions answered from general knowledge.")
    _write_criterion(user, "legal_drafting", "Draft contract clauses and legal letters.")
    merged = load_pack("realign", user)
    assert len(merged.names()) == 47
    assert merged["open_qa"].description.startswith("My own")
    assert merged["open_qa"].path == str(user / "open_qa.md")
    assert merged["planning"] == realign_pack["planning"]
    assert merged.content_hash != realign_pack.content_hash


def test_a_folder_can_be_a_whole_pack_and_unknown_packs_are_named(tmp_path: Path) -> None:
    _write_criterion(tmp_path / "solo", "open_qa", "Only this type, as a pack of its own.")
    assert load_pack(str(tmp_path / "solo")).names() == ["open_qa"]
    with pytest.raises(CriteriaError, match=r"no built-in criteria pack named 'nope'.*realign"):
        load_pack("nope")


def test_user_folder_errors_name_the_user_file(tmp_path: Path) -> None:
    user = tmp_path / "mine"
    _write_criterion(user, "open_qa", "My own open questions answered from general knowledge.")
    p = user / "open_qa.md"
    p.write_text(p.read_text(encoding="utf-8").replace("rewrite: yes", "rewrite: 3"), "utf-8")
    with pytest.raises(CriteriaError, match=r"mine/open_qa.md: field 'rewrite'"):
        load_pack("realign", user)


# ---------------------------------------------------------------- `realign criteria new`


def test_new_writes_a_template_that_validates(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    result = runner.invoke(app, ["criteria", "new", "legal_drafting", "--dir", str(folder)])
    assert result.exit_code == 0, result.output
    written = folder / "legal_drafting.md"
    crit = parse_criterion(written.read_text(encoding="utf-8"), str(written))
    assert crit.name == "legal_drafting"
    assert any("TODO" in w for w in criterion_warnings(crit))  # reminds the user to edit it

    check = runner.invoke(app, ["criteria", "validate", str(folder)])
    assert check.exit_code == 0 and "ok: 1 criteria file(s)" in check.stdout
    assert "TODO" in check.stderr
    strict = runner.invoke(app, ["criteria", "validate", str(folder), "--strict"])
    assert strict.exit_code == 1


def test_new_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "legal_drafting.md"
    target.write_text("my precious edits", encoding="utf-8")
    result = runner.invoke(app, ["criteria", "new", "legal_drafting", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "already exists" in result.stderr
    assert target.read_text(encoding="utf-8") == "my precious edits"


def test_new_copies_a_builtin_to_override_it(tmp_path: Path, realign_pack) -> None:
    result = runner.invoke(app, ["criteria", "new", "open_qa", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    copied = load_dir(tmp_path)["open_qa"]
    assert copied.model_dump(exclude={"path"}) == realign_pack["open_qa"].model_dump(
        exclude={"path"}
    )

    result = runner.invoke(
        app,
        [
            "criteria",
            "new",
            "recipe_writing",
            "--from",
            "how_to_generation",
            "--dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    recipe = load_dir(tmp_path)["recipe_writing"]
    assert recipe.format == realign_pack["how_to_generation"].format


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Bad-Name"], "lower_snake_case"),
        (["recipe_writing", "--from", "no_such_type"], "no task type 'no_such_type'"),
    ],
)
def test_new_rejects_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["criteria", "new", *args, "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_template_text_is_valid_for_any_good_name() -> None:
    crit = parse_criterion(new_criterion_text("x1_y"), "somewhere/x1_y.md")
    assert crit.rewrite and crit.format


# ---------------------------------------------------------------- list, show, validate


def test_validate_builtin_pack_prints_count_and_hash(realign_pack) -> None:
    result = runner.invoke(app, ["criteria", "validate"])
    assert result.exit_code == 0, result.output
    assert "ok: 46 criteria file(s)" in result.stdout
    assert realign_pack.content_hash in result.stdout
    wrap = runner.invoke(app, ["criteria", "validate", "wrap"])
    assert wrap.exit_code == 0 and "ok: 4 criteria file(s)" in wrap.stdout


def test_validate_one_file_and_an_empty_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["criteria", "validate", str(OPEN_QA)])
    assert result.exit_code == 0 and "ok: 1 criteria file(s)" in result.stdout
    empty = runner.invoke(app, ["criteria", "validate", str(tmp_path)])
    assert empty.exit_code == 1 and "no criteria files" in empty.stderr


def test_list_shows_every_type(tmp_path: Path) -> None:
    result = runner.invoke(app, ["criteria", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in REALIGN_TYPES:
        assert name in result.stdout
    assert "46 criteria" in result.stdout

    rows = [
        json.loads(line)
        for line in runner.invoke(app, ["criteria", "list", "--json"]).stdout.splitlines()
    ]
    assert sorted(r["name"] for r in rows) == sorted(REALIGN_TYPES)
    open_qa = next(r for r in rows if r["name"] == "open_qa")
    assert (open_qa["rewrite"], open_qa["retrieval"], open_qa["source"]) == (True, True, "pack")


def test_list_marks_user_files(tmp_path: Path) -> None:
    _write_criterion(tmp_path, "legal_drafting", "Draft contract clauses and legal letters.")
    result = runner.invoke(app, ["criteria", "list", "--criteria", str(tmp_path), "--json"])
    rows = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert len(rows) == 47
    assert rows["legal_drafting"]["source"] == "user" and rows["open_qa"]["source"] == "pack"
    table = runner.invoke(app, ["criteria", "list", "--criteria", str(tmp_path)])
    assert "legal_drafting *" in table.stdout and "1 from" in table.stdout


def test_list_reports_a_broken_user_folder(tmp_path: Path) -> None:
    (tmp_path / "oops.md").write_text("no header here", encoding="utf-8")
    result = runner.invoke(app, ["criteria", "list", "--criteria", str(tmp_path)])
    assert result.exit_code == 1 and "oops.md" in result.stderr


def test_show_prints_fields_examples_and_format(realign_pack) -> None:
    result = runner.invoke(app, ["criteria", "show", "math_puzzles"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    crit = realign_pack["math_puzzles"]
    assert crit.description in result.stdout
    assert crit.examples[0] in result.stdout
    assert "Final answer" in result.stdout
    raw = runner.invoke(app, ["criteria", "show", "math_puzzles", "--raw"])
    assert raw.stdout == Path(crit.path).read_text(encoding="utf-8")


def test_show_unknown_name_suggests_close_ones() -> None:
    result = runner.invoke(app, ["criteria", "show", "opn_qa"])
    assert result.exit_code == 1
    assert "did you mean: open_qa" in result.stderr


def test_help_teaches_with_examples() -> None:
    for cmd in ("list", "show", "validate", "new"):
        result = runner.invoke(app, ["criteria", cmd, "--help"])
        assert result.exit_code == 0
        assert "realign criteria" in result.stdout


def test_no_example_is_an_item_of_the_heldout_measurement_set(realign_pack) -> None:
    # benchmarks/data/own_heldout.json measures the classifier; an example copied from it would
    # turn the measurement into a memory test.
    root = Path(__file__).resolve().parents[1]
    heldout = json.loads((root / "benchmarks" / "data" / "own_heldout.json").read_text())

    def norm(s: str) -> str:
        return " ".join(re.findall(r"[a-z0-9']+", s.lower()))

    examples = {norm(e) for n in realign_pack.names() for e in realign_pack[n].examples}
    assert {norm(x["instruction"]) for x in heldout}.isdisjoint(examples)


def test_builtin_formats_do_not_invite_new_content(realign_pack) -> None:
    """Issue 14.5: sections that make the rewriter add content the original never had (a tip,
    a check, a usage example with a guessed output, notes) are gone or optional."""
    inviting = re.compile(r"^\s*\d+\.\s+\*\*(Tip|Tips and warnings|Check|Check it|Usage|Notes)\*\*")
    for c in realign_pack.criteria.values():
        if not c.rewrite:
            continue
        for line in c.format.splitlines():
            m = inviting.match(line)
            assert not m or "(optional" in line, f"{c.name}: {line}"


def test_rewrite_prompt_has_the_fluency_rule_and_lets_verdicts_fit() -> None:
    from realign import prompts

    system, user = prompts.render(
        "rewrite",
        task_type="fact_verification",
        format="**True** or **False**, then the evidence.",
        context="",
        instruction="True or false: lightning never strikes the same place twice.",
        response="False.",
        evidence=[],
        force=False,
    )
    assert "fluent" in system.content and "no subheadings beyond" in system.content
    assert "optional" in system.content  # optional parts only with content from the original
    # A True/False question is not a "yes/no answer" that rules the format out.
    assert "yes/no answer" not in user.content
    assert "True/False" in user.content and "still fits" in user.content
