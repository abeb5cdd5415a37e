"""`import-realign` on checkouts laid out as users really have them (issue 22): a clone used
through `git worktree`, with its refs packed; a `reformat.py` whose other sampling defaults
realign does not send. The checkouts are SYNTHETIC (`tests/realign_checkout.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import realign_checkout as rc

from realign.realign_import import git_commit, read_checkout

OTHER = "89abcdef0123456789abcdef0123456789abcdef"


def test_commit_of_a_worktree_whose_refs_are_packed(tmp_path: Path) -> None:
    # `git clone` then `git worktree add ../wt -b other` then `git gc`: the worktree's `.git`
    # is a file naming its gitdir; HEAD is there, the branch is in the common dir's
    # packed-refs (no loose ref file anywhere).
    main = rc.write_checkout(tmp_path / "ReAlign", git=False)
    common = main / ".git"
    gitdir = common / "worktrees" / "wt"
    gitdir.mkdir(parents=True)
    (common / "HEAD").write_text("ref: refs/heads/main\n")
    (common / "packed-refs").write_text(
        "# pack-refs with: peeled fully-peeled sorted \n"
        f"{rc.COMMIT} refs/heads/main\n{OTHER} refs/heads/other\n"
    )
    (gitdir / "HEAD").write_text("ref: refs/heads/other\n")
    (gitdir / "commondir").write_text("../..\n")
    wt = rc.write_checkout(tmp_path / "wt", git=False)
    (wt / ".git").write_text(f"gitdir: {gitdir}\n")
    assert git_commit(wt) == OTHER
    assert git_commit(main) == rc.COMMIT
    assert read_checkout(wt).commit == OTHER


def test_commit_of_a_worktree_with_a_loose_ref(tmp_path: Path) -> None:
    main = rc.write_checkout(tmp_path / "ReAlign")  # loose refs/heads/main
    gitdir = main / ".git" / "worktrees" / "wt"
    gitdir.mkdir(parents=True)
    (gitdir / "HEAD").write_text("ref: refs/heads/main\n")
    (gitdir / "commondir").write_text("../..\n")
    wt = rc.write_checkout(tmp_path / "wt", git=False)
    (wt / ".git").write_text("gitdir: ../ReAlign/.git/worktrees/wt\n")  # relative, as git may
    assert git_commit(wt) == rc.COMMIT


def test_a_top_p_other_than_one_is_a_warning(tmp_path: Path) -> None:
    # ReAlign's script sends its --top_p; realign sends none (the provider's default, 1).
    same = read_checkout(rc.write_checkout(tmp_path / "same"))
    assert not any("top_p" in w for w in same.warnings)
    reformat = rc.REFORMAT.replace("'--top_p', type=float, default=1", "'--top_p', default=0.9")
    assert reformat != rc.REFORMAT
    other = read_checkout(rc.write_checkout(tmp_path / "other", reformat=reformat))
    assert any("--top_p defaults to 0.9" in w for w in other.warnings)


def _real_forms_constant() -> tuple[str, dict[str, str]]:
    """`constant.py` in the literal forms of ReAlign's real file, with placeholder text: the
    judge prompts as one-line double-quoted strings with `\\n` and `\\"` escapes, the rewrite
    prompts as `'''` strings that open with a newline and have a line ending in a space, dict
    keys in both quote styles, annotated assignments, trailing commas."""
    prompts = dict(rc.PROMPTS)
    prompts["REWRITING_USER_PROMPT"] = (
        "\nPH-USER, trailing space: \n{question}\n{response}\n{structure}\n"
    )
    prompts["READABILITY_EVALUATION_SYSTEM_PROMPT"] = 'PH-JUDGE: write "[[A]]", "[[B]]" or "[[C]]".'
    lines = ["TASK_DESCRIPTION = {"]
    for i, (k, v) in enumerate(rc.DESCRIPTIONS.items()):
        key = f"'{k}'" if i % 2 else json.dumps(k)
        lines.append(f"    {key}: {json.dumps(v)},")
    lines += ["}", "", "", f"RAG_TASKS = {rc.RAG!r}", "REWRITE_TASK = ["]
    lines += [f"    {t!r}," for t in rc.REWRITE] + ["]", ""]
    for name, text in prompts.items():
        if "EVALUATION" in name:
            lines.append(f"{name}: str = {json.dumps(text)}")
        else:
            lines.append(f"{name}: str = '''{text}'''\n")
    lines.append("STRUCTURE: dict = {")
    for k, v in rc.STRUCTURES.items():
        lines.append(f"    {json.dumps(k)}: '''{v}''',\n")
    lines += ["}", f"task_group = {rc.GROUPS!r}"]
    return "\n".join(lines) + "\n", prompts


def test_the_real_files_literal_forms_come_through_byte_for_byte(tmp_path: Path) -> None:
    text, prompts = _real_forms_constant()
    assert '\\"[[A]]\\"' in text and "trailing space: \n" in text
    got = read_checkout(rc.write_checkout(tmp_path / "R", constant=text))
    assert got.templates["rewrite_user"] == prompts["REWRITING_USER_PROMPT"]
    assert (
        got.templates["judge_readability_system"] == prompts["READABILITY_EVALUATION_SYSTEM_PROMPT"]
    )
    assert got.templates["judge_factuality_user"] == rc.PROMPTS["FACTUALITY_EVALUATION_USER_PROMPT"]
    formats = {c.name: c.format for c in got.criteria}
    for name, fmt in rc.STRUCTURES.items():
        assert formats[name].strip() == fmt.strip()
