"""The official `openai` Python client, unmodified, against orinari.

Usage: python_client.py http://HOST:PORT/v1
Exits 0 when every check passes; prints one line per check.
"""

import sys

import openai
from openai import OpenAI

MODEL = "orinari-small"
PROMPT = [{"role": "user", "content": "Write two sentences about the sea."}]

failures = []


def check(name, fn):
    try:
        fn()
        print(f"python: ok   {name}")
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        failures.append(name)
        print(f"python: FAIL {name}: {type(e).__name__}: {e}")


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1"
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)

    def models_list():
        ids = [m.id for m in client.models.list()]
        expect(MODEL in ids, f"{MODEL} not in {ids}")

    def models_retrieve():
        m = client.models.retrieve(MODEL)
        expect(m.id == MODEL and m.object == "model", repr(m))

    def chat():
        r = client.chat.completions.create(
            model=MODEL, messages=PROMPT, max_tokens=24, temperature=0
        )
        expect(r.object == "chat.completion", r.object)
        expect(r.model == MODEL, r.model)
        c = r.choices[0]
        expect(c.message.role == "assistant", c.message.role)
        expect(c.message.content, "empty content")
        expect(c.finish_reason in ("stop", "length"), c.finish_reason)
        u = r.usage
        expect(u.prompt_tokens > 0 and 0 < u.completion_tokens <= 24, repr(u))
        expect(u.total_tokens == u.prompt_tokens + u.completion_tokens, repr(u))

    def chat_stream():
        stream = client.chat.completions.create(
            model=MODEL,
            messages=PROMPT,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage, chunks = "", None, None, 0
        for chunk in stream:
            chunks += 1
            expect(chunk.object == "chat.completion.chunk", chunk.object)
            if chunk.usage is not None:
                usage = chunk.usage
                expect(chunk.choices == [], "usage chunk has choices")
                continue
            delta = chunk.choices[0].delta
            text += delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        expect(chunks > 2, f"only {chunks} chunks")
        expect(text, "empty stream")
        expect(finish in ("stop", "length"), finish)
        expect(usage is not None, "no usage chunk")
        expect(0 < usage.completion_tokens <= 24, repr(usage))
        # The stream says what the whole response says.
        whole = client.chat.completions.create(
            model=MODEL, messages=PROMPT, max_tokens=24, temperature=0
        )
        expect(whole.choices[0].message.content == text, f"{whole.choices[0].message.content!r} != {text!r}")

    def seed():
        kwargs = dict(model=MODEL, messages=PROMPT, max_tokens=16, temperature=1.0, seed=1234)
        a = client.chat.completions.create(**kwargs).choices[0].message.content
        b = client.chat.completions.create(**kwargs).choices[0].message.content
        expect(a == b, f"same seed, different output: {a!r} vs {b!r}")

    def stop():
        full = client.chat.completions.create(
            model=MODEL, messages=PROMPT, max_tokens=32, temperature=0
        ).choices[0].message.content
        words = full.split()
        expect(len(words) >= 4, f"too short to pick a stop word: {full!r}")
        word = words[len(words) // 2]
        r = client.chat.completions.create(
            model=MODEL, messages=PROMPT, max_tokens=32, temperature=0, stop=[word]
        )
        got = r.choices[0].message.content
        expect(word not in got, f"stop {word!r} in {got!r}")
        expect(full.startswith(got), f"{got!r} is not a prefix of {full!r}")
        expect(r.choices[0].finish_reason == "stop", r.choices[0].finish_reason)

    def bad_request():
        try:
            client.chat.completions.create(model=MODEL, messages=PROMPT, temperature=9)
        except openai.BadRequestError as e:
            expect(e.status_code == 400, e.status_code)
            expect(e.param == "temperature", f"param {e.param!r}")
            expect(e.type == "invalid_request_error", e.type)
            return
        raise AssertionError("no BadRequestError")

    def bad_request_empty_messages():
        try:
            client.chat.completions.create(model=MODEL, messages=[])
        except openai.BadRequestError as e:
            expect(e.param == "messages", f"param {e.param!r}")
            return
        raise AssertionError("no BadRequestError")

    def embeddings():
        # The client asks for base64 unless told otherwise, and decodes it.
        texts = [
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The new movie is awesome",
        ]
        r = client.embeddings.create(model="orinari-embed", input=texts)
        expect(r.object == "list" and r.model == "orinari-embed", repr(r))
        expect([d.index for d in r.data] == [0, 1, 2], repr([d.index for d in r.data]))
        v = [d.embedding for d in r.data]
        expect(all(len(x) == 384 for x in v), "not 384 dimensions")

        def dot(a, b):
            return sum(x * y for x, y in zip(a, b))

        expect(abs(dot(v[0], v[0]) - 1) < 1e-4, "not unit length")
        expect(dot(v[0], v[1]) > dot(v[0], v[2]) + 0.2, "related sentences are not closer")
        u = r.usage
        expect(u.prompt_tokens > 0 and u.total_tokens == u.prompt_tokens, repr(u))
        f = client.embeddings.create(
            model="orinari-embed", input=texts[0], encoding_format="float"
        )
        diff = max(abs(a - b) for a, b in zip(f.data[0].embedding, v[0]))
        expect(diff < 1e-6, f"float and base64 differ by {diff}")

    def embeddings_upstream():
        r = client.embeddings.create(model="fake-gpt", input=["ab", "abcd"])
        got = [d.embedding for d in r.data]
        expect(got == [[2.0, 0.0, 1.0, 0.0], [4.0, 1.0, 1.0, 0.0]], repr(got))

    def embeddings_bad():
        try:
            client.embeddings.create(model="orinari-embed", input="x", dimensions=128)
        except openai.BadRequestError as e:
            expect(e.param == "dimensions", f"param {e.param!r}")
            return
        raise AssertionError("no BadRequestError")

    def not_found():
        try:
            client.chat.completions.create(model="no-such-model", messages=PROMPT)
        except openai.NotFoundError as e:
            expect(e.status_code == 404, e.status_code)
            expect(e.code == "model_not_found", e.code)
        else:
            raise AssertionError("no NotFoundError from chat")
        try:
            client.models.retrieve("no-such-model")
        except openai.NotFoundError:
            return
        raise AssertionError("no NotFoundError from models.retrieve")

    for name, fn in [
        ("models.list", models_list),
        ("models.retrieve", models_retrieve),
        ("chat.completions.create", chat),
        ("chat.completions.create stream + include_usage", chat_stream),
        ("seed determinism", seed),
        ("stop sequence", stop),
        ("invalid request -> BadRequestError(param)", bad_request),
        ("empty messages -> BadRequestError(param)", bad_request_empty_messages),
        ("unknown model -> NotFoundError", not_found),
        ("embeddings.create (orinari-embed, base64 and float)", embeddings),
        ("embeddings.create passed through to an upstream", embeddings_upstream),
        ("embeddings.create dimensions -> BadRequestError(param)", embeddings_bad),
    ]:
        check(name, fn)

    print(f"python: openai {openai.__version__}: {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
