"""The Responses API through orinari with real clients: the official
`openai` Python client's `client.responses.create` (whole, `stream=True`,
the `responses.stream` helper that rebuilds the response from its events,
a function tool round trip) against models served by the in-repo fake
upstream through the OpenAI and the Anthropic adapters and against the
embedded model; the refusals that keep "nothing retained"; and an OpenAI
Agents SDK agent with one function tool.

Usage: responses_client.py http://HOST:PORT/v1
Exits 0 when every check passes; prints one line per check.
"""

import asyncio
import json
import sys
import urllib.request

import jsonschema

import openai
from openai import AsyncOpenAI, OpenAI

OPENAI_MODEL = "fake-gpt"
ANTHROPIC_MODEL = "fake-claude"
LOCAL_MODEL = "orinari-small"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]

failures = []


def check(name, fn):
    try:
        fn()
        print(f"responses: ok   {name}")
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        failures.append(name)
        print(f"responses: FAIL {name}: {type(e).__name__}: {e}")


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1"
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)

    def whole(model):
        def run():
            r = client.responses.create(
                model=model, instructions="Be brief.", input="Say hello.", max_output_tokens=16
            )
            expect(r.object == "response", r.object)
            expect(r.id.startswith("resp_"), r.id)
            expect(r.status in ("completed", "incomplete"), r.status)
            expect(r.output[0].type == "message", r.output)
            expect(r.output_text, repr(r.output_text))
            expect(r.usage.output_tokens > 0 and r.usage.total_tokens > r.usage.output_tokens,
                   r.usage)

        return run

    def streamed(model):
        def run():
            kinds, text, final = [], "", None
            for event in client.responses.create(
                model=model, input="Say hello.", max_output_tokens=16, stream=True
            ):
                kinds.append(event.type)
                if event.type == "response.output_text.delta":
                    text += event.delta
                if event.type in ("response.completed", "response.incomplete"):
                    final = event.response
            expect(kinds[:2] == ["response.created", "response.in_progress"], kinds)
            expect("response.output_text.done" in kinds, kinds)
            expect(final is not None and final.output_text == text and text, (final, text))
            # The SDK's helper rebuilds the response from the events (it
            # wants `response.completed`: an answer cut by max_output_tokens
            # ends with `response.incomplete`, as OpenAI's does).
            with client.responses.stream(model=model, input="Say hello.", max_output_tokens=24) as s:
                last = None
                for event in s:
                    last = event
                if last.type == "response.completed":
                    expect(s.get_final_response().output_text, last)
                else:
                    expect(last.type == "response.incomplete", last)

        return run

    def tool_round_trip(model, call_prefix):
        def run():
            r = client.responses.create(model=model, input=ASK, tools=[WEATHER])
            calls = [o for o in r.output if o.type == "function_call"]
            expect(calls and calls[0].name == "get_weather", r.output)
            expect(calls[0].call_id.startswith(call_prefix), calls[0])
            expect(json.loads(calls[0].arguments) == {"city": "fake"}, calls[0].arguments)
            history = ASK + [o.model_dump(exclude_none=True) for o in r.output] + [
                {"type": "function_call_output", "call_id": calls[0].call_id,
                 "output": "Sunny, 21 C"}
            ]
            r = client.responses.create(model=model, input=history, tools=[WEATHER])
            expect(r.output[0].type == "message" and r.output_text, r.output)
            # Streamed: the argument deltas join into the call.
            args, done = "", None
            for event in client.responses.create(model=model, input=ASK, tools=[WEATHER],
                                                 tool_choice="required", stream=True):
                if event.type == "response.function_call_arguments.delta":
                    args += event.delta
                if event.type == "response.output_item.done":
                    done = event.item
            expect(json.loads(args) == {"city": "fake"}, args)
            expect(done.type == "function_call" and done.arguments == args, done)

        return run

    def json_schema():
        r = client.responses.create(
            model=OPENAI_MODEL, input="The weather in Paris as JSON",
            text={"format": {"type": "json_schema", "name": "weather", "strict": True,
                             "schema": {"type": "object",
                                        "properties": {"celsius": {"type": "integer"}},
                                        "required": ["celsius"],
                                        "additionalProperties": False}}},
        )
        expect(isinstance(json.loads(r.output_text)["celsius"], int), r.output_text)

    def refusals():
        for kwargs, param in [
            ({"store": True}, "store"),
            ({"previous_response_id": "resp_123"}, "previous_response_id"),
            ({"background": True}, "background"),
            ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ]:
            try:
                client.responses.create(model=OPENAI_MODEL, input="hi", **kwargs)
            except openai.BadRequestError as e:
                err = e.body if isinstance(e.body, dict) else {}
                expect(err.get("param") == param, (kwargs, err))
            else:
                raise AssertionError(f"{kwargs} was accepted")

    def openapi_schemas():
        root = base_url.rsplit("/v1", 1)[0]
        with urllib.request.urlopen(f"{root}/openapi.json", timeout=30) as r:
            schemas = json.load(r)["components"]["schemas"]

        def validator(name):
            return jsonschema.Draft202012Validator(
                {"components": {"schemas": schemas}, **schemas[name]})

        req = {"model": OPENAI_MODEL, "input": ASK, "tools": [WEATHER], "store": False,
               "text": {"format": {"type": "text"}}}
        validator("ResponsesRequest").validate(req)
        raw = client.responses.with_raw_response.create(**req)
        validator("Response").validate(json.loads(raw.text))

    def agents_sdk(model):
        from agents import (Agent, ModelSettings, OpenAIResponsesModel, Runner,
                            function_tool, set_tracing_disabled)

        set_tracing_disabled(True)  # no trace export: nothing leaves the machine
        called = []

        @function_tool
        def get_weather(city: str) -> str:
            """The weather in a city."""
            called.append(city)
            return f"Sunny in {city}"

        async def run():
            responses = OpenAIResponsesModel(
                model=model,
                openai_client=AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0),
            )
            if model == LOCAL_MODEL:
                # The embedded model calls when told to (constrained decoding);
                # the tool's result is the answer.
                agent = Agent(name="weather", instructions="Answer with the weather.",
                              tools=[get_weather], model=responses,
                              tool_use_behavior="stop_on_first_tool",
                              model_settings=ModelSettings(store=False, tool_choice="required",
                                                           max_tokens=200, temperature=0))
                result = await Runner.run(agent, "What is the weather in Paris?")
                expect(len(called) == 1 and isinstance(called[0], str), called)
                expect(result.final_output == f"Sunny in {called[0]}", result.final_output)
                return
            agent = Agent(name="weather", instructions="Answer with the weather.",
                          tools=[get_weather], model=responses,
                          model_settings=ModelSettings(store=False))
            result = await Runner.run(agent, "What is the weather in Paris?")
            expect(called == ["fake"], called)
            expect(result.final_output, result)
            streamed = Runner.run_streamed(agent, "And in Rome?")
            async for _ in streamed.stream_events():
                pass
            expect(called == ["fake", "fake"] and streamed.final_output, streamed)

        return lambda: asyncio.run(run())

    check("whole text, fake upstream (openai adapter)", whole(OPENAI_MODEL))
    check("whole text, fake upstream (anthropic adapter)", whole(ANTHROPIC_MODEL))
    check("whole text, embedded model", whole(LOCAL_MODEL))
    check("stream=True and responses.stream, fake upstream", streamed(OPENAI_MODEL))
    check("stream=True and responses.stream, embedded model", streamed(LOCAL_MODEL))
    check("function tool round trip (openai adapter)", tool_round_trip(OPENAI_MODEL, "call_"))
    check("function tool round trip (anthropic adapter)",
          tool_round_trip(ANTHROPIC_MODEL, "toolu_"))
    check("text.format json_schema", json_schema)
    check("store, previous_response_id, background, built-in tools refused by name", refusals)
    check("a real response validates against the OpenAPI document", openapi_schemas)
    check("OpenAI Agents SDK: an agent with one function tool", agents_sdk(OPENAI_MODEL))
    check("OpenAI Agents SDK: a function tool called by the embedded model", agents_sdk(LOCAL_MODEL))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
