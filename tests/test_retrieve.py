"""Retrieval stage: query building, snippet cleaning, caching, error handling, records."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from packs import tiny_pack

from realign import tokens
from realign.llm.cache import Cache
from realign.llm.engine import Engine
from realign.llm.fake import FakeBackend
from realign.records import Evidence, Record, Turn, UnitMeta
from realign.search.base import SearchError
from realign.stages.retrieve import NOTE_NO_EVIDENCE, Retriever, attach_evidence
from realign.stages.retrieve_clean import clean_evidence, strip_snippet
from realign.stages.retrieve_query import MAX_QUERY_CHARS, build_query, key_terms, request_context

# ---------------------------------------------------------------- queries


@pytest.mark.parametrize(
    ("instruction", "query"),
    [
        (
            "when did the democratic party change its name?",
            "when did the democratic party change its name?",
        ),
        ("Answer the following question: Who wrote Hamlet?", "Who wrote Hamlet?"),
        ("Please answer the question below: who wrote  Hamlet?\n", "who wrote Hamlet?"),
        ("Question: Can you tell me   who painted the Mona Lisa?", "who painted the Mona Lisa?"),
        ("Q: what is the boiling point of water", "what is the boiling point of water"),
        ("I want to know how tall Mount Everest is.", "how tall Mount Everest is."),
        (
            "I am planning a trip to Japan in April. What should I pack? Keep it short.",
            "I am planning a trip to Japan in April. What should I pack? Keep it short.",
        ),
        (  # long: focused on the question
            "Read the passage and answer the question. Passage: "
            + "The river is long. " * 10
            + "Question: Into which ocean does the Amazon flow?",
            "Into which ocean does the Amazon flow?",
        ),
        (  # long with a short question: the sentence before it is kept as context
            "Here is my code, it is a long function with many lines "
            + "x = 1 " * 12
            + ". The app crashes on start. What is wrong? Please fix it.",
            "The app crashes on start. What is wrong?",
        ),
        (  # long without a question: the first 32 words
            "Summarize this: " + " ".join(f"w{i}" for i in range(40)),
            "Summarize this: " + " ".join(f"w{i}" for i in range(30)),
        ),
        ("   ", ""),
    ],
)
def test_build_query(instruction: str, query: str) -> None:
    assert build_query(instruction) == query


def test_build_query_caps_words_and_chars() -> None:
    long = " ".join(f"word{i}" for i in range(100))
    assert build_query(long).split() == [f"word{i}" for i in range(32)]
    huge = "x" * 5000 + " tail"
    assert len(build_query(huge)) <= MAX_QUERY_CHARS


ROMAN = (
    "The Roman Empire followed the Roman Republic and ruled the lands around the Mediterranean "
    "for centuries. I have been reading about its history for a class and I keep mixing up the "
    "names of the rulers. Who was the first emperor?"
)


def test_long_instruction_keeps_what_its_question_is_about() -> None:
    # The question alone ("Who was the first emperor?") would search for any empire.
    query = build_query(ROMAN)
    assert query.startswith("I have been reading")
    assert "Who was the first emperor? Roman Empire" in query
    assert len(query.split()) <= 32


def test_key_terms_are_names_and_years_not_sentence_starters() -> None:
    text = (
        "In the 1830s the Democratic Party, led by Andrew Jackson, won. Summarize it. What is it?"
    )
    assert key_terms(text) == ["1830s", "Democratic Party", "Andrew Jackson"]


def test_later_turn_is_searched_with_the_names_of_earlier_requests() -> None:
    rec = _record(
        ("Tell me about the Roman Empire.", "It was ...", "open_qa"),
        ("And Egypt under the Ptolemies?", "They ...", "open_qa"),
        ("Who was its first emperor?", "Augustus.", "open_qa"),
    )
    ctx = request_context(rec, 5)
    assert ctx == "And Egypt under the Ptolemies?\nTell me about the Roman Empire."
    assert request_context(rec, 1) == ""
    assert build_query("Who was its first emperor?", ctx) == (
        "Who was its first emperor? Egypt Ptolemies Roman Empire"
    )
    # a first turn is searched as it is
    assert build_query("Who was its first emperor?") == "Who was its first emperor?"


def test_attach_evidence_searches_a_later_turn_with_its_context(tmp_path: Path) -> None:
    pack = tiny_pack(tmp_path)
    provider = ScriptedProvider({})
    rec = _record(
        ("Tell me about the Roman Empire.", "It was ...", "open_qa"),
        ("Who was its first emperor?", "Augustus.", "open_qa"),
    )
    asyncio.run(attach_evidence(rec, pack, Retriever(provider, None)))
    assert sorted(q for q, _ in provider.calls) == [
        "Tell me about the Roman Empire.",
        "Who was its first emperor? Roman Empire",
    ]


def test_build_query_is_deterministic() -> None:
    text = "Answer the following question:  How do vaccines train the immune system?"
    assert len({build_query(text) for _ in range(5)}) == 1


# ---------------------------------------------------------------- cleaning


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Mar 3, 2021 — The party was renamed.", "The party was renamed."),
        ("3 days ago · Tides follow the Moon.", "Tides follow the Moon."),
        ("2021-03-03 - ISO dates too.", "ISO dates too."),
        ("12 Jan 2020 ... Day first dates.", "Day first dates."),
        (
            "Rome was founded in 753 BC ... Missing: empire | Must include: empire",
            "Rome was founded in 753 BC",
        ),
        ("Tom &amp; Jerry   first aired\nin 1940.", "Tom & Jerry first aired in 1940."),
    ],
)
def test_strip_snippet(raw: str, clean: str) -> None:
    assert strip_snippet(raw) == clean


@pytest.mark.parametrize(
    ("snippet", "reason"),
    [
        ("", "empty"),
        ("Two words", "empty"),
        ("Missing: tides | Must include: tides", "empty"),
        ("Updated: March 5, 2021", "date only"),
        ("No results found for your query.", "no results"),
        ("Your search - zzqx - did not match any documents.", "no results"),
        ("We use cookies to give you the best experience on our website.", "notice"),
        ("Please enable JavaScript to view this page properly.", "notice"),
        ("Skip to main content. Welcome to our shop and blog.", "navigation"),
        ("Home › Science › Earth › Oceans › Tides", "navigation"),
        ("Home | About us | Products | Blog | Contact", "navigation"),
    ],
)
def test_unusable_snippets_are_dropped(snippet: str, reason: str) -> None:
    kept, report = clean_evidence([Evidence(snippet=snippet, url="u")])
    assert kept == [] and report.dropped == {reason: 1}


def test_search_engine_answers_are_kept_however_short() -> None:
    # Serper's answer box / knowledge graph: the answer itself, often one to two words or a date.
    items = [
        Evidence(snippet="2013", title="When was it built", answer=True),
        Evidence(snippet="Kyrsten Sinema", answer=True),
        Evidence(snippet="October 3, 1970", answer=True),
        Evidence(snippet="2013", answer=True),  # the same answer twice
        Evidence(snippet="Construction of the bridge finished in 2013 after six years.", url="o"),
        Evidence(snippet="2013", url="x"),  # an organic snippet is still held to 3 words
    ]
    kept, report = clean_evidence(items)
    assert [e.snippet for e in kept] == [
        "2013",
        "Kyrsten Sinema",
        "October 3, 1970",
        "Construction of the bridge finished in 2013 after six years.",  # not a "duplicate"
    ]
    assert report.dropped == {"duplicate": 1, "empty": 1}


def test_clean_keeps_good_snippets_with_separators() -> None:
    good = (
        "Tides are caused by the Moon | a short explanation of gravity and the oceans for students"
    )
    kept, _ = clean_evidence([Evidence(snippet=good)])
    assert len(kept) == 1


def test_clean_drops_duplicates_and_contained_snippets() -> None:
    items = [
        Evidence(snippet="The Moon's gravity causes the tides in the oceans.", url="a"),
        Evidence(snippet="the moons gravity causes the tides in the oceans", url="b"),
        Evidence(snippet="Gravity causes the tides", url="c"),  # contained in the first
        Evidence(snippet="Spring tides happen when the Sun and Moon line up.", url="d"),
    ]
    kept, report = clean_evidence(items)
    assert [e.url for e in kept] == ["a", "d"] and report.dropped == {"duplicate": 2}
    assert report.describe() == "4 results: 2 duplicate"


def test_clean_caps_total_tokens() -> None:
    items = [Evidence(title=f"t{i}", snippet=("fact " * 200).strip(), url=str(i)) for i in range(4)]
    items = [i.model_copy(update={"snippet": f"{n} {i.snippet}"}) for n, i in enumerate(items)]
    kept, report = clean_evidence(items, max_tokens=300)
    total = sum(tokens.count(e.title) + tokens.count(e.snippet) for e in kept)
    assert total <= 300 + 2  # the "…" marker may add a token
    assert len(kept) == 2 and kept[-1].snippet.endswith("…")
    assert report.dropped == {"over token cap": 2}


# ---------------------------------------------------------------- the retriever


class ScriptedProvider:
    """A provider answering from a dict; raises the SearchError given for a query."""

    name = "scripted"

    def __init__(self, answers: dict[str, list[Evidence] | SearchError]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int]] = []

    @property
    def provider_id(self) -> str:
        return "scripted:v1"

    async def search(self, query: str, k: int) -> list[Evidence]:
        self.calls.append((query, k))
        ans = self.answers.get(query, [])
        if isinstance(ans, SearchError):
            raise ans
        return ans[:k]


GOOD = [
    Evidence(snippet="Shakespeare wrote Hamlet around 1600.", title="Hamlet", url="https://a"),
    Evidence(snippet="Hamlet is a tragedy set in Denmark.", title="Hamlet (play)", url="https://b"),
]


def _engine(path: Path) -> Engine:
    return Engine(FakeBackend(), cache=Cache(path))


def test_answers_are_cached_so_a_rerun_never_pays_twice(tmp_path: Path) -> None:
    provider = ScriptedProvider({"who wrote Hamlet?": GOOD})
    first = Retriever(provider, _engine(tmp_path / "c.sqlite"))
    res = asyncio.run(first.evidence_for("Answer the following question: who wrote Hamlet?"))
    assert res.query == "who wrote Hamlet?" and [e.url for e in res.evidence] == [
        "https://a",
        "https://b",
    ]
    assert res.note == "" and provider.calls == [("who wrote Hamlet?", 5)]
    # a new run (new engine, same cache file) answers from the cache
    second = Retriever(provider, _engine(tmp_path / "c.sqlite"))
    again = asyncio.run(second.evidence_for("who wrote Hamlet?"))
    assert again == res and len(provider.calls) == 1
    # another k is another question
    asyncio.run(second.evidence_for("who wrote Hamlet?", k=3))
    assert provider.calls[-1] == ("who wrote Hamlet?", 3)


def test_quota_error_disables_provider_once_with_one_message() -> None:
    quota = SearchError("quota", "scripted", "HTTP 429: Quota exceeded", status=429)
    provider = ScriptedProvider({"q1?": quota, "q2?": GOOD})
    messages: list[str] = []
    r = Retriever(provider, None, on_message=messages.append)
    results = [asyncio.run(r.evidence_for(q)) for q in ("q1?", "q2?", "q3?")]
    assert [res.note for res in results] == [
        "search provider disabled: quota exceeded (HTTP 429)"
    ] * 3
    assert all(res.evidence == [] for res in results)
    assert provider.calls == [("q1?", 5)]  # nothing is sent after the quota error
    assert len(messages) == 1 and "scripted search disabled for the rest of this run" in messages[0]
    assert r.stats.errors == 1 and r.stats.skipped_disabled == 2


def test_concurrent_quota_errors_give_one_message() -> None:
    auth = SearchError("auth", "scripted", "HTTP 403: forbidden", status=403)
    provider = ScriptedProvider({f"question {i}?": auth for i in range(6)})
    messages: list[str] = []
    r = Retriever(provider, None, on_message=messages.append)

    async def many() -> list:
        return await asyncio.gather(*(r.evidence_for(f"question {i}?") for i in range(6)))

    results = asyncio.run(many())
    assert len(messages) == 1
    assert {res.note for res in results} == {
        "search provider disabled: authentication failed (HTTP 403)"
    }


def test_other_errors_fail_one_query_then_disable_after_a_streak() -> None:
    bad = SearchError("other", "scripted", "HTTP 400: bad request", status=400)
    provider = ScriptedProvider({f"question {i}?": bad for i in range(7)} | {"fine?": GOOD})
    messages: list[str] = []
    r = Retriever(provider, None, on_message=messages.append)
    first = asyncio.run(r.evidence_for("question 0?"))
    assert first.note == "search failed: HTTP 400: bad request; rewritten without evidence"
    assert asyncio.run(r.evidence_for("fine?")).evidence  # a success resets the streak
    for i in range(1, 6):
        last = asyncio.run(r.evidence_for(f"question {i}?"))
    assert last.note == "search provider disabled: 5 failures in a row" and len(messages) == 1


def test_transient_errors_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    flaky = SearchError("other", "scripted", "network error: reset")
    provider = ScriptedProvider({"q?": flaky})
    r = Retriever(provider, None, retries=2)
    assert asyncio.run(r.evidence_for("q?")).note.startswith("search failed: network error")
    assert len(provider.calls) == 3


async def _no_sleep(_: float) -> None:
    return None


def test_empty_evidence_after_cleaning_is_explained() -> None:
    junk = [Evidence(snippet="Home | About | Blog | Shop"), Evidence(snippet="No results found.")]
    r = Retriever(ScriptedProvider({"q?": junk}), None)
    res = asyncio.run(r.evidence_for("q?"))
    assert res.evidence == []
    assert res.note == f"{NOTE_NO_EVIDENCE} (2 results: 1 navigation, 1 no results)"


def test_no_provider_and_empty_instruction() -> None:
    assert (
        asyncio.run(Retriever(None).evidence_for("who?")).note
        == "retrieval: none (no search provider)"
    )
    r = Retriever(ScriptedProvider({}), None)
    assert asyncio.run(r.evidence_for("  ")).note == "no query: the instruction is empty"


# ---------------------------------------------------------------- records


def _record(*pairs: tuple[str, str, str | None]) -> Record:
    turns: list[Turn] = []
    for user, assistant, category in pairs:
        turns.append(
            Turn(role="user", content=user, extra={"category": category} if category else {})
        )
        turns.append(Turn(role="assistant", content=assistant))
    return Record(id="r1", index=0, turns=turns, source_format="items")


def test_attach_evidence_by_task_type(tmp_path: Path) -> None:
    pack = tiny_pack(tmp_path)  # open_qa has retrieval: yes, math_puzzles no
    provider = ScriptedProvider({"who wrote Hamlet?": GOOD})
    rec = _record(
        ("who wrote Hamlet?", "Shakespeare.", "open_qa"),
        ("what is 2+2?", "4", "math_puzzles"),
        ("and a poem?", "Roses...", None),
        ("and another?", "Sure", "unknown_type"),
    )
    asyncio.run(attach_evidence(rec, pack, Retriever(provider, None)))
    u = rec.meta.units
    assert [x.turn for x in u] == [1, 3, 5, 7]
    assert (
        u[0].query == "who wrote Hamlet?" and len(u[0].evidence) == 2 and u[0].evidence_note == ""
    )
    assert u[0].task_type == "open_qa" and u[0].task_source == "input"
    assert rec.meta.task_type == "open_qa"
    assert u[1].evidence == [] and u[1].evidence_note == "retrieval: no for math_puzzles"
    assert u[2].evidence_note.startswith("no task type")
    assert u[3].evidence_note == "task type 'unknown_type' is not in criteria pack 'pack'"
    assert provider.calls == [("who wrote Hamlet?", 5)]


def test_attach_evidence_keeps_existing_units_and_all_types(tmp_path: Path) -> None:
    pack = tiny_pack(tmp_path)
    provider = ScriptedProvider({"what is 2+2?": GOOD})
    rec = _record(("what is 2+2?", "4", "open_qa"))
    rec.meta.units = [UnitMeta(turn=1, task_type="math_puzzles", task_source="llm")]
    asyncio.run(attach_evidence(rec, pack, Retriever(provider, None)))
    assert rec.meta.units[0].task_type == "math_puzzles"  # a classified type wins over input
    assert rec.meta.units[0].evidence_note == "retrieval: no for math_puzzles"
    asyncio.run(attach_evidence(rec, pack, Retriever(provider, None), k=2, all_types=True))
    assert len(rec.meta.units[0].evidence) == 2 and provider.calls == [("what is 2+2?", 2)]
