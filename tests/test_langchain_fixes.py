"""The LangChain workarounds (`realign.llm.langchain_fixes`) hold for the installed versions."""

from __future__ import annotations

import importlib.metadata
import re

import pytest

from realign.llm import langchain_fixes
from realign.llm.base import Usage


def _major_minor(version: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", version)
    assert m, version
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("dist", sorted(langchain_fixes.CHECKED_WITH))
def test_installed_version_is_one_the_workarounds_were_checked_with(dist: str) -> None:
    # Failing here after an upgrade: re-read llm/langchain_fixes.py against the new version
    # (and run tests/test_backend_payload.py), then move CHECKED_WITH.
    low, high = langchain_fixes.CHECKED_WITH[dist]
    installed = importlib.metadata.version(dist)
    assert low <= _major_minor(installed) < high, (
        f"{dist} {installed} is outside the range the LangChain workarounds were checked "
        f"for ({'.'.join(map(str, low))} to before {'.'.join(map(str, high))})"
    )


def test_structured_parts_keep_the_request_and_drop_langsmith_metadata() -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="m", api_key="sk-test-0123456789", base_url="http://127.0.0.1:9/v1")
    schema = {"title": "Label", "type": "object", "properties": {"x": {"type": "string"}}}
    kwargs, parser = langchain_fixes.structured_parts(llm, schema, "function_calling")
    # What LangChain binds today: the forced tool call, and LangSmith's tracing metadata
    # (which must not be sent). A LangChain that binds other things changes this test.
    assert kwargs["tool_choice"]["function"]["name"] == "Label"
    assert [t["function"]["name"] for t in kwargs["tools"]] == ["Label"]
    assert "ls_structured_output_format" not in kwargs
    assert hasattr(parser, "parse_result")


def test_max_tokens_goes_under_its_old_name_to_compatible_servers() -> None:
    assert langchain_fixes.max_tokens_kwargs(64, openai_url=True) == {"max_tokens": 64}
    assert langchain_fixes.max_tokens_kwargs(64, openai_url=False) == {
        "extra_body": {"max_tokens": 64}
    }


def test_usage_is_counted_once_and_a_full_budget_means_cut() -> None:
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration

    gens = [
        ChatGeneration(
            message=AIMessage(
                content="x",
                usage_metadata={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
            ),
            generation_info={"finish_reason": "tool_calls"},
        )
        for _ in range(2)
    ]
    usage = langchain_fixes.usage_of(
        {"token_usage": {"prompt_tokens": 3, "completion_tokens": 4}}, gens
    )
    assert usage == Usage(prompt_tokens=3, completion_tokens=4)  # not summed per choice
    assert langchain_fixes.usage_of(None, gens) == Usage(prompt_tokens=3, completion_tokens=2)
    assert langchain_fixes.finish_reasons(gens, 2, 4, usage) == ["tool_calls", "tool_calls"]
    one = gens[:1]
    assert langchain_fixes.finish_reasons(one, 1, 2, Usage(completion_tokens=2)) == ["length"]
    assert langchain_fixes.finish_reasons(one, 1, 64, Usage(completion_tokens=2)) == ["tool_calls"]
