"""Tools and structured output through orinari with real clients: the
official `openai` Python client, LangChain (`langchain-openai`: bind_tools
round trip, with_structured_output), against models served by the in-repo
fake upstream (which really emits tool calls) over the OpenAI and the
Anthropic adapters; the embedded model's tool calls and structured output
(LangChain too) and log probabilities; and the OpenAPI
document, validated as OpenAPI 3.1 with real answers checked against its
schemas.

Usage: tools_client.py http://HOST:PORT/v1
Exits 0 when every check passes; prints one line per check.
"""

import json
import sys
import urllib.request

import jsonschema
import openai
from openai import OpenAI
from openapi_spec_validator import validate

OPENAI_MODEL = "fake-gpt"
ANTHROPIC_MODEL = "fake-claude"
LOCAL_MODEL = "orinari-small"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]

failures = []


def check(name, fn):
    try:
        fn()
        print(f"tools: ok   {name}")
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        failures.append(name)
        print(f"tools: FAIL {name}: {type(e).__name__}: {e}")


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1"
    root = base_url.rsplit("/v1", 1)[0]
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)

    def tool_round_trip(model):
        def run():
            r = client.chat.completions.create(model=model, messages=ASK, tools=[WEATHER])
            c = r.choices[0]
            expect(c.finish_reason == "tool_calls", c.finish_reason)
            call = c.message.tool_calls[0]
            expect(call.function.name == "get_weather", call)
            expect(json.loads(call.function.arguments) == {"city": "fake"}, call)
            history = ASK + [
                c.message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
            ]
            r = client.chat.completions.create(model=model, messages=history, tools=[WEATHER])
            expect(r.choices[0].finish_reason == "stop", r.choices[0])
            expect(r.choices[0].message.content, r.choices[0])

        return run

    def streamed_tool_calls(model):
        def run():
            stream = client.chat.completions.create(
                model=model,
                messages=ASK,
                tools=[WEATHER],
                tool_choice="required",
                stream=True,
                stream_options={"include_usage": True},
            )
            args, names, finish, usage, pieces = "", [], None, None, 0
            for chunk in stream:
                if chunk.usage:
                    usage = chunk.usage
                for ch in chunk.choices:
                    finish = ch.finish_reason or finish
                    for d in ch.delta.tool_calls or []:
                        pieces += 1
                        if d.function and d.function.name:
                            names.append(d.function.name)
                        if d.function and d.function.arguments:
                            args += d.function.arguments
            expect(names == ["get_weather"], names)
            expect(json.loads(args) == {"city": "fake"}, args)
            expect(pieces > 2, f"{pieces} pieces")
            expect(finish == "tool_calls", finish)
            expect(usage and usage.completion_tokens > 0, usage)

        return run

    def json_mode():
        r = client.chat.completions.create(
            model=OPENAI_MODEL, messages=ASK, response_format={"type": "json_object"}
        )
        expect(isinstance(json.loads(r.choices[0].message.content), dict), r)

    def embedded_tools():
        # Greedy (temperature 0): the same answers every run.
        r = client.chat.completions.create(model=LOCAL_MODEL, messages=ASK, tools=[WEATHER],
                                           tool_choice="required", max_tokens=200, temperature=0)
        c = r.choices[0]
        expect(c.finish_reason == "tool_calls", c)
        call = c.message.tool_calls[0]
        expect(call.function.name == "get_weather" and call.id.startswith("call_"), call)
        expect(isinstance(json.loads(call.function.arguments)["city"], str), call)
        history = ASK + [
            c.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
        ]
        r = client.chat.completions.create(model=LOCAL_MODEL, messages=history, tools=[WEATHER],
                                           tool_choice="none", max_tokens=40, temperature=0)
        expect(r.choices[0].message.content and not r.choices[0].message.tool_calls, r)
        # Streamed: the call comes as tool_calls deltas.
        args, names = "", []
        for chunk in client.chat.completions.create(
                model=LOCAL_MODEL, messages=ASK, tools=[WEATHER], max_tokens=200, temperature=0,
                tool_choice={"type": "function", "function": {"name": "get_weather"}}, stream=True):
            for ch in chunk.choices:
                for d in ch.delta.tool_calls or []:
                    names += [d.function.name] if d.function and d.function.name else []
                    args += d.function.arguments or "" if d.function else ""
        expect(names == ["get_weather"] and isinstance(json.loads(args)["city"], str), (names, args))
        # Log probabilities from the model's own distribution, in the client's types.
        r = client.chat.completions.create(model=LOCAL_MODEL, messages=ASK, max_tokens=8,
                                           temperature=0, logprobs=True, top_logprobs=2)
        content = r.choices[0].logprobs.content
        expect(content and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in content), r)
        expect(b"".join(bytes(t.bytes) for t in content).decode() == r.choices[0].message.content, r)
        # Relayed from an OpenAI-compatible upstream, streamed.
        got = [t.token for chunk in client.chat.completions.create(
                   model=OPENAI_MODEL, messages=ASK, max_tokens=3, logprobs=True, top_logprobs=1,
                   stream=True)
               for ch in chunk.choices if ch.logprobs for t in ch.logprobs.content]
        expect(got == ["tok0 ", "tok1 ", "tok2 "], got)

    def embedded_langchain():
        from langchain_core.messages import HumanMessage
        from langchain_core.tools import tool
        from langchain_openai import ChatOpenAI
        from pydantic import BaseModel, Field

        class Weather(BaseModel):
            city: str = Field(max_length=40)
            celsius: int

        @tool
        def get_weather(city: str) -> str:
            """The weather in a city."""
            return f"Sunny in {city}"

        llm = ChatOpenAI(model=LOCAL_MODEL, base_url=base_url, api_key="unused", max_retries=0,
                         max_tokens=200, temperature=0, timeout=120)
        for method in ("json_schema", "function_calling"):
            prompt = "The weather in Paris as JSON with keys city and celsius"
            out = llm.with_structured_output(Weather, method=method).invoke(prompt)
            expect(isinstance(out, Weather), f"{method}: {out!r}")
        ai = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(
            [HumanMessage("What is the weather in Paris?")])
        expect(ai.tool_calls and ai.tool_calls[0]["name"] == "get_weather", ai)
        expect(isinstance(ai.tool_calls[0]["args"].get("city"), str), ai.tool_calls)

    def langchain_bind_tools():
        from langchain_core.messages import HumanMessage, ToolMessage
        from langchain_core.tools import tool
        from langchain_openai import ChatOpenAI

        @tool
        def get_weather(city: str) -> str:
            """The weather in a city."""
            return f"Sunny in {city}"

        llm = ChatOpenAI(model=OPENAI_MODEL, base_url=base_url, api_key="unused", max_retries=0)
        bound = llm.bind_tools([get_weather])
        messages = [HumanMessage("What is the weather in Paris?")]
        ai = bound.invoke(messages)
        expect(ai.tool_calls and ai.tool_calls[0]["name"] == "get_weather", ai)
        expect(ai.tool_calls[0]["args"] == {"city": "fake"}, ai.tool_calls)
        messages += [ai, ToolMessage(get_weather.invoke(ai.tool_calls[0]["args"]),
                                     tool_call_id=ai.tool_calls[0]["id"])]
        final = bound.invoke(messages)
        expect(not final.tool_calls and final.content, final)
        # Streamed, the tool call chunks join into one call.
        joined = None
        for piece in bound.stream([HumanMessage("Weather?")]):
            joined = piece if joined is None else joined + piece
        expect(joined.tool_calls and joined.tool_calls[0]["args"] == {"city": "fake"}, joined)

    def langchain_structured_output():
        from langchain_openai import ChatOpenAI
        from pydantic import BaseModel

        class Weather(BaseModel):
            city: str
            celsius: int

        llm = ChatOpenAI(model=OPENAI_MODEL, base_url=base_url, api_key="unused", max_retries=0)
        for method in ("json_schema", "function_calling"):
            out = llm.with_structured_output(Weather, method=method).invoke(
                "The weather in Paris as JSON with keys city and celsius"
            )
            expect(isinstance(out, Weather), f"{method}: {out!r}")

    def openapi_document():
        with urllib.request.urlopen(f"{root}/openapi.json", timeout=30) as r:
            doc = json.load(r)
        validate(doc)  # raises on anything that is not valid OpenAPI 3.1
        schemas = doc["components"]["schemas"]

        def validator(name):
            resolver_doc = {"components": {"schemas": schemas}, **schemas[name]}
            return jsonschema.Draft202012Validator(resolver_doc)

        whole = client.chat.completions.with_raw_response.create(
            model=OPENAI_MODEL, messages=ASK, tools=[WEATHER]
        )
        validator("ChatCompletion").validate(json.loads(whole.text))
        req = {"model": OPENAI_MODEL, "messages": ASK, "tools": [WEATHER], "tool_choice": "auto",
               "response_format": {"type": "text"}, "stream": False}
        validator("ChatCompletionRequest").validate(req)
        body = json.dumps({"model": OPENAI_MODEL, "messages": ASK, "tools": [WEATHER],
                           "stream": True, "stream_options": {"include_usage": True}}).encode()
        post = urllib.request.Request(f"{base_url}/chat/completions", data=body,
                                      headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(post, timeout=60) as r:
            text = r.read().decode()
        chunks = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
        expect(chunks[-1] == "[DONE]", chunks[-1])
        for c in chunks[:-1]:
            validator("ChatCompletionChunk").validate(json.loads(c))
        try:
            client.chat.completions.create(model=OPENAI_MODEL, messages=ASK,
                                           extra_body={"bogus": 1})
        except openai.BadRequestError as e:
            validator("ErrorResponse").validate(e.response.json())
        else:
            raise AssertionError("an unknown field was accepted")

    def anthropic_sdk(model):
        def run():
            import anthropic

            a = anthropic.Anthropic(base_url=root, api_key="unused", max_retries=0, timeout=120)
            m = a.messages.create(model=model, max_tokens=16,
                                  messages=[{"role": "user", "content": "Say hello."}])
            expect(m.type == "message" and m.content and m.content[0].type == "text", m)
            expect(m.usage.output_tokens > 0, m.usage)
            with a.messages.stream(model=model, max_tokens=16,
                                   messages=[{"role": "user", "content": "Say hello."}]) as s:
                text = "".join(s.text_stream)
                final = s.get_final_message()
            expect(text and final.stop_reason in ("end_turn", "max_tokens"), final)
            tool = {"name": "get_weather", "description": "Weather",
                    "input_schema": WEATHER["function"]["parameters"]}
            if model == LOCAL_MODEL:
                # The embedded model calls when told to (constrained decoding).
                m = a.messages.create(model=model, max_tokens=200, tools=[tool],
                                      extra_body={"temperature": 0},
                                      tool_choice={"type": "any"},
                                      messages=[{"role": "user", "content": "Weather in Paris?"}])
                use = next(b for b in m.content if b.type == "tool_use")
                expect(m.stop_reason == "tool_use" and isinstance(use.input.get("city"), str), m)
                return
            m = a.messages.create(model=model, max_tokens=64, tools=[tool],
                                  messages=[{"role": "user", "content": "Weather in Paris?"}])
            expect(m.stop_reason == "tool_use", m)
            use = next(b for b in m.content if b.type == "tool_use")
            expect(use.input == {"city": "fake"}, use)
            with a.messages.stream(model=model, max_tokens=64, tools=[tool],
                                   messages=[{"role": "user", "content": "Weather?"}]) as s:
                final = s.get_final_message()
            use = next(b for b in final.content if b.type == "tool_use")
            expect(use.input == {"city": "fake"} and final.stop_reason == "tool_use", final)
            m = a.messages.create(model=model, max_tokens=64, tools=[tool], messages=[
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": [use.model_dump()]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                              "content": "Sunny"}]}])
            expect(m.stop_reason == "end_turn" and m.content[0].type == "text", m)

        return run

    def legacy_completions():
        r = client.completions.create(model=OPENAI_MODEL, prompt="Once upon a time")
        expect(r.object == "text_completion" and r.choices[0].text, r)
        expect(r.choices[0].finish_reason == "stop" and r.usage.completion_tokens > 0, r)
        text = "".join(c.choices[0].text for c in client.completions.create(
            model=LOCAL_MODEL, prompt="Once upon a time", max_tokens=8, stream=True) if c.choices)
        expect(text, "nothing streamed")

    check("openai completions (legacy)", legacy_completions)
    check("anthropic SDK /v1/messages and tool use (embedded model)", anthropic_sdk(LOCAL_MODEL))
    check("anthropic SDK /v1/messages tools (OpenAI upstream)", anthropic_sdk(OPENAI_MODEL))
    check("anthropic SDK /v1/messages tools (Anthropic upstream)", anthropic_sdk(ANTHROPIC_MODEL))
    check("openai tools round trip (OpenAI upstream)", tool_round_trip(OPENAI_MODEL))
    check("openai tools round trip (Anthropic upstream)", tool_round_trip(ANTHROPIC_MODEL))
    check("openai streamed tool calls (OpenAI upstream)", streamed_tool_calls(OPENAI_MODEL))
    check("openai streamed tool calls (Anthropic upstream)", streamed_tool_calls(ANTHROPIC_MODEL))
    check("openai json_object", json_mode)
    check("embedded model: tool calls, whole and streamed, a round trip, logprobs", embedded_tools)
    check("embedded model: langchain with_structured_output and bind_tools", embedded_langchain)
    check("langchain bind_tools round trip", langchain_bind_tools)
    check("langchain with_structured_output", langchain_structured_output)
    check("openapi.json is valid OpenAPI 3.1 and describes real answers", openapi_document)

    if failures:
        print(f"tools: {len(failures)} failed: {', '.join(failures)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
