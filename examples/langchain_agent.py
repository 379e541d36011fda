"""A LangChain tool-calling agent over knowrec: a chat model on any OpenAI-compatible server calls knowrec's tools.

    pip install 'knowrec[local,langchain]'
    knowrec demo --max-users 8 --data-dir ./knowrec-data            # or any data dir you ingested
    python examples/langchain_agent.py --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-7B-Instruct \\
        --user 1 "I loved Toy Story. What else would I like, and why?"

A small model cannot choose a tool by itself: --force-tool makes the first turn call that tool (the server
constrains the arguments to the tool's schema), e.g. with the bundled SmolLM2 on ``python -m llama_cpp.server``
(docs/langchain.md):

    python examples/langchain_agent.py --model smollm2 --user 1 --force-tool item_facts \\
        'Call item_facts with {"item_id": "1"}.'
"""

from __future__ import annotations

import argparse
import json
import os

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from knowrec import Recommender, Settings
from knowrec.integrations.langchain import knowrec_tools

SYSTEM = (
    "You help the user pick films. Use the tools to find items and their facts; item ids come from the tools. "
    "Answer briefly and say why, citing the facts the tools returned."
)


def main() -> None:
    p = argparse.ArgumentParser(description="A LangChain agent over knowrec's tools.")
    p.add_argument("question")
    p.add_argument("--data-dir", default="./knowrec-data", help="an ingested knowrec data dir")
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="an OpenAI-compatible API root")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--user", default=None, help="act for this user id (the model cannot name another)")
    p.add_argument("--force-tool", default=None, help="the tool the first turn must call")
    p.add_argument("--ranking", default="none", choices=["none", "verbalizer", "listwise", "pointwise"])
    p.add_argument("--steps", type=int, default=4, help="at most this many model turns")
    args = p.parse_args()

    rec = Recommender(Settings(data_dir=args.data_dir, progress=False))
    tools = knowrec_tools(rec, user_id=args.user, ranking_mode=args.ranking)
    by_name = {t.name: t for t in tools}
    llm = ChatOpenAI(
        base_url=args.base_url,
        api_key=os.environ.get("OPENAI_API_KEY", "none"),
        model=args.model,
        temperature=0,
        extra_body={"max_tokens": 300},  # llama-cpp-python's server ignores max_completion_tokens
    )
    messages: list[BaseMessage] = [SystemMessage(SYSTEM), HumanMessage(args.question)]
    try:
        for step in range(args.steps):
            choice = args.force_tool if step == 0 else None
            ai = llm.bind_tools(tools, tool_choice=choice).invoke(messages)
            assert isinstance(ai, AIMessage)
            if not ai.tool_calls:
                print(ai.content)
                return
            # a one-space content: llama-cpp-python's server rejects an assistant message whose content is null
            messages.append(AIMessage(content=ai.content or " ", tool_calls=ai.tool_calls))
            for call in ai.tool_calls:
                result = by_name[call["name"]].invoke(call)  # a knowrec error comes back as the result's text
                print(f"-> {call['name']}({json.dumps(call['args'])}): {str(result.content)[:300]}")
                messages.append(result)
        print(f"(no answer after {args.steps} turns)")
    finally:
        rec.close()


if __name__ == "__main__":
    main()
