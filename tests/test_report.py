"""The HTML report: diff, views, self-containment, the `report` command, and a real browser."""

from __future__ import annotations

import asyncio
import html as htmllib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from realign import judge, report
from realign.cli.main import app
from realign.llm.base import ChatRequest
from realign.llm.engine import Engine
from realign.llm.fake import FakeBackend
from realign.records import Candidate, FilterDecision, RealignMeta, Record, Turn, UnitMeta
from realign.report import diff as report_diff


def rec(rid: str, q: str, a: str, category: str | None = "open_qa", index: int = 0) -> Record:
    extra = {"category": category} if category else {}
    return Record(
        id=rid,
        index=index,
        source_format="items",
        turns=[Turn(role="user", content=q, extra=extra), Turn(role="assistant", content=a)],
    )


def prefers_lists(req: ChatRequest) -> str:
    user = next(m.content for m in req.messages if "<response_a>" in m.content)
    first = user.split("<response_a>\n", 1)[1]
    return json.dumps(
        {"rationale": "the list is clearer", "winner": "A" if first.startswith("- ") else "B"}
    )


QUESTIONS = [
    "Capital of France?",
    "Largest planet?",
    "Who wrote Hamlet?",
    "Boiling point of water?",
]
GOLD = ["Paris", "Jupiter", "Shakespeare\nWilliam Shakespeare", "100 °C\n100 degrees Celsius"]
PLAIN = ["It is Paris.", "Saturn, I believe.", "Hamlet is by Shakespeare.", "It boils at 100 °C."]
LISTS = [
    "- **Paris** is the capital.",
    "- **Jupiter** is the largest.",
    "- **William Shakespeare** wrote it.",
    "- **90 °C** <b>maybe</b>",
]


@pytest.fixture
def comparison() -> judge.Comparison:
    a = [rec(str(i), q, t, None, i) for i, (q, t) in enumerate(zip(QUESTIONS, PLAIN, strict=True))]
    b = [
        rec(str(i), q, t, "open_qa", i)
        for i, (q, t) in enumerate(zip(QUESTIONS, LISTS, strict=True))
    ]
    refs = judge.ReferenceIndex(
        [rec(str(i), q, g, None, i) for i, (q, g) in enumerate(zip(QUESTIONS, GOLD, strict=True))]
    )
    engine = Engine(FakeBackend(prefers_lists))
    return asyncio.run(
        judge.judge_pairwise(
            engine,
            a,
            b,
            ["readability"],
            pack=None,
            references=refs,
            names=("plain.json", "lists.json"),
        )
    )


def test_word_diff_marks_changes_and_escapes() -> None:
    left, right = report.word_diff("The cat sat.", "The <b>dog</b> sat.")
    assert left == "The <del>cat</del> sat."
    assert right == "The <ins>&lt;b&gt;dog&lt;/b&gt;</ins> sat."
    same_l, same_r = report.word_diff("same text", "same text")
    assert same_l == same_r == "same text"


def test_word_diff_falls_back_to_lines_for_huge_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_diff, "_MAX_DIFF_TOKENS", 5)
    left, right = report.word_diff("one two three four\nfive\n", "one two three four\nsix\n")
    assert left == "one two three four\n<del>five\n</del>"
    assert right == "one two three four\n<ins>six\n</ins>"


def test_comparison_page_is_self_contained_and_escaped(comparison: judge.Comparison) -> None:
    page = report.render_html(report.comparison_view(comparison))
    assert "<title>realign comparison" in page
    # Nothing fetched at view time: no external scripts, styles, images or fonts.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "<b>maybe</b>" not in page and "&lt;b&gt;maybe&lt;/b&gt;" in page
    assert page.count('<article class="row"') == 4
    assert page.count("<svg") >= 3  # outcome bars, by task type, length histogram
    st = comparison.summary["readability"].overall
    assert st.counts == {"win": 4, "tie": 0, "lose": 0}
    assert "100% [100%–100%]" in page
    # Containment beside the verdicts: A has 3 of 4 gold answers, B has 3 of 4 too.
    assert comparison.metrics_a.containment_rate == 0.75
    assert comparison.metrics_b.containment_rate == 0.75
    assert "A contains gold answer" in page and "75%" in page
    assert "[B shown first → B] the list is clearer" in htmllib.unescape(page)


def test_scores_page_shows_distributions() -> None:
    engine = Engine(FakeBackend(lambda r: json.dumps({"rationale": "ok", "score": 8})))
    recs = [
        rec(str(i), q, t, index=i) for i, (q, t) in enumerate(zip(QUESTIONS, PLAIN, strict=True))
    ]
    scores = asyncio.run(judge.judge_pointwise(engine, recs, ["readability"], pack=None))
    page = report.render_html(report.scores_view(scores))
    assert "readability score distribution" in page and "8.00 [8.00–8.00]" in page
    assert page.count('<article class="row"') == 4


def run_output_records() -> list[Record]:
    r1 = rec("1", "Explain photosynthesis.", "Plants turn **light** into sugar.\n\n- step one")
    r1.meta = RealignMeta(
        task_type="explain_answer",
        status="rewritten",
        units=[
            UnitMeta(
                turn=1,
                task_type="explain_answer",
                status="rewritten",
                original="Plants turn light into sugar.",
                candidates=[Candidate(response="…")],
                filter=FilterDecision(keep_original=False, rule="passed"),
            )
        ],
    )
    r2 = rec("2", "Say hi.", "hi", index=1)
    r2.meta = RealignMeta(
        units=[
            UnitMeta(
                turn=1,
                task_type="chitchat",
                status="kept",
                reason="the rewrite lost content",
                original="hi",
                filter=FilterDecision(keep_original=True, rule="length_ratio", reason="3x longer"),
            )
        ]
    )
    return [r1, r2]


def test_run_view_counts_statuses_and_diffs() -> None:
    view = report.run_view(run_output_records(), source="out.json")
    page = report.render_html(view)
    cards = dict(view.cards)
    assert cards["rewritten responses"] == "1 (50%)" and cards["kept responses"] == "1 (50%)"
    assert "<ins>**</ins>" in view.rows[0].right_html  # bold markers added
    assert not view.rows[1].changed
    assert "filter kept the original (rule length_ratio: 3x longer)" in page
    assert "length_ratio" in page and "passed" in page


def test_rewritten_share_chart_plots_shares_not_counts() -> None:
    """3 of 12 `open_qa` responses rewritten is a smaller share than 2 of 2 `planning` ones,
    though a larger count: the bars and labels must say 25% and 100%."""

    def unit_rec(i: int, task_type: str, status: str) -> Record:
        r = rec(str(i), f"Question {i}?", f"Answer {i}.", index=i)
        r.meta = RealignMeta(
            units=[UnitMeta(turn=1, task_type=task_type, status=status, original=f"Answer {i}.")]
        )
        return r

    recs = [unit_rec(i, "open_qa", "rewritten" if i < 3 else "kept") for i in range(12)]
    recs += [unit_rec(12 + i, "planning", "rewritten") for i in range(2)]
    view = report.run_view(recs, source="out.json")
    (chart,) = [c for s in view.sections for c in s.charts if c.title.startswith("Rewritten share")]
    widths = {
        name: float(w)
        for w, name in re.findall(r'<rect [^>]*width="([\d.]+)"[^>]*><title>(\w+):', chart.svg)
    }
    assert widths["planning"] == pytest.approx(4 * widths["open_qa"])
    assert "25% (3/12)" in chart.svg and "100% (2/2)" in chart.svg


def write_items(path: Path, records: list[Record]) -> None:
    from realign.io.emit import from_record

    path.write_text(
        json.dumps([from_record(r) for r in records], ensure_ascii=False), encoding="utf-8"
    )


def test_report_command_on_a_run_output(tmp_path: Path) -> None:
    src = tmp_path / "out.json"
    write_items(src, run_output_records())
    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["report", str(src), "--html", str(out)])
    assert res.exit_code == 0, res.output
    page = out.read_text(encoding="utf-8")
    assert "realign run report" in page and "Explain photosynthesis." in page
    assert page.count('<article class="row"') == 2


def test_report_command_redraws_a_judge_output(
    tmp_path: Path, comparison: judge.Comparison
) -> None:
    src = tmp_path / "cmp.json"
    src.write_text(comparison.model_dump_json(), encoding="utf-8")
    out = tmp_path / "cmp.html"
    res = CliRunner().invoke(app, ["report", str(src), "--html", str(out)])
    assert res.exit_code == 0, res.output
    assert "realign comparison" in out.read_text(encoding="utf-8")


def test_report_command_names_a_missing_file(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["report", str(tmp_path / "nope.json"), "--html", str(tmp_path / "x.html")]
    )
    assert res.exit_code != 0 and "nope.json" in res.output


# --- a real browser -----------------------------------------------------------------------


def _chromium() -> str | None:
    return next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))),
        None,
    )


def _browse(exe: str, url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--window-size=1280,1600",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.chromium
def test_report_renders_in_headless_chromium(tmp_path: Path, comparison: judge.Comparison) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    page = tmp_path / "cmp.html"
    page.write_text(report.render_html(report.comparison_view(comparison)), encoding="utf-8")

    # The DOM after the page's script ran, with a search carried in the URL.
    res = _browse(exe, page.as_uri() + "#q=jupiter", tmp_path / "profile", "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert "<title>realign comparison" in dom
    cards = dict(re.findall(r'<div class="label">(.*?)</div><div class="value">(.*?)</div>', dom))
    st = comparison.summary["readability"].overall
    assert cards["pairs judged"] == "4"
    assert (
        cards["readability: B better"] == f"{st.win.rate:.0%} [{st.win.low:.0%}–{st.win.high:.0%}]"
    )
    assert cards["A contains gold answer"] == "75%"
    # The script filtered the rows: only the Jupiter pair stays visible, with its diff.
    assert re.search(r'id="shown">1 of 4 shown<', dom)
    rows = re.findall(r'<article class="row"[^>]*?(style="[^"]*")?>(.*?)</article>', dom, re.S)
    visible = [body for style, body in rows if "display: none" not in style]
    assert len(rows) == 4 and len(visible) == 1
    assert "Largest planet?" in visible[0] and "<ins>" in visible[0] and "<del>" in visible[0]

    shot = tmp_path / "shot.png"
    res = _browse(exe, page.as_uri(), tmp_path / "profile2", f"--screenshot={shot}")
    assert res.returncode == 0, res.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 1600)
    assert len(data) > 30_000  # a blank page compresses to a few KB; text and charts do not
