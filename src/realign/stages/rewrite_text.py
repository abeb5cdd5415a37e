"""The rewrite in ReAlign's own answer style (`answer_style: realign-text` in `pack.yaml`).

The pack's templates (`templates/*.txt`, e.g. imported by `realign criteria import-realign`)
are sent as they are: the system text alone, the user text with its `str.format`
placeholders filled (`{question}`, `{response}`, `{structure}`, `{evidence}`), both stripped
of surrounding whitespace, as ReAlign's rewrite script sends them. The reply is plain text,
"Reasoning: … Revised response: …", read the way that script reads it. The prompt has no
separate fit decision: a model that judges the format unfit copies the response, which the
filter then reports as `unchanged`.
"""

from __future__ import annotations

from realign import tokens
from realign.criteria import Criterion
from realign.llm.base import ChatRequest, Message, for_record
from realign.llm.engine import Engine, StructuredOutputError
from realign.records import Candidate, Evidence

REVISED = "Revised response:"
REASONING = "Reasoning:"
ATTEMPTS = 3  # a reply without "Revised response:" is asked again (ReAlign retries forever)


class TemplateError(ValueError):
    """The pack's templates cannot make this request (a missing template or placeholder)."""


def evidence_text(evidence: list[Evidence]) -> str:
    """Numbered snippets separated by blank lines ("1. …\\n\\n2. …"), as ReAlign lists them."""
    return "\n\n".join(f"{i}. {e.snippet}" for i, e in enumerate(evidence, start=1)).strip()


def template_keys(*, evidence: bool, force: bool) -> tuple[str, str]:
    """(system, user) template keys: with evidence the retrieval pair; `--force` the
    non-adaptive system text (ReAlign's NON_ADAPTIVITTY_* prompts share the user text)."""
    system = "rewrite_retrieval_system" if evidence else "rewrite_system"
    if force:
        system = system.replace("rewrite_", "rewrite_force_", 1)
    return system, "rewrite_retrieval_user" if evidence else "rewrite_user"


def text_messages(
    templates: dict[str, str],
    criterion: Criterion,
    instruction: str,
    response: str,
    evidence: list[Evidence],
    *,
    force: bool,
) -> list[Message]:
    system_key, user_key = template_keys(evidence=bool(evidence), force=force)
    for key in (system_key, user_key):
        if key not in templates:
            raise TemplateError(
                f"the pack has no template {key} (templates/{key}.txt)"
                + (" needed by --force" if force and "force" in key else "")
            )
    values = {
        "question": instruction,
        "response": response,
        "structure": criterion.format.strip(),
        "evidence": evidence_text(evidence),
    }
    try:
        user = templates[user_key].format_map(values)
    except (KeyError, IndexError, ValueError) as e:
        raise TemplateError(
            f"template {user_key}: cannot fill placeholder {e} "
            f"(known: {', '.join('{' + k + '}' for k in values)})"
        ) from e
    return [
        Message(role="system", content=templates[system_key].strip()),
        Message(role="user", content=user.strip()),
    ]


def parse_reply(text: str) -> tuple[str, str] | None:
    """(reasoning, revised response) of a reply, None when it has no "Revised response:"."""
    if REVISED not in text:
        return None
    head, revised = text.split(REVISED, 1)
    reasoning = head.split(REASONING, 1)[1] if REASONING in head else head
    return reasoning.strip(), revised.strip()


async def rewrite_text(engine: Engine, request: ChatRequest) -> list[Candidate]:
    """The candidates of `request` (a `text_messages` request). Only a reply with at least one
    readable candidate is cached; after ATTEMPTS replies with none, StructuredOutputError."""
    raw = ""
    for _ in range(ATTEMPTS):
        resp = await engine.chat(request, store=False)
        # Each readable reply with its own finish reason: "length" lets the filter's
        # `truncated` rule keep the original, as it does for structured rewrites.
        parsed = [
            (p, resp.finish_reason(i))
            for i, p in enumerate(parse_reply(t) for t in resp.texts)
            if p is not None
        ]
        if parsed:
            engine.store(request, resp)
            return [
                Candidate(
                    response=revised,
                    reasoning=reasoning[:400],
                    format_fits=True,
                    tokens=tokens.count(revised),
                    finish_reason=reason,
                )
                for (reasoning, revised), reason in parsed
            ]
        if resp.cached:
            engine.forget(request)
        raw = resp.texts[-1] if resp.texts else ""
    raise StructuredOutputError(
        f"rewrite{for_record(request)}: no reply had {REVISED!r} after {ATTEMPTS} attempts",
        raw_output=raw,
    )
