#!/usr/bin/env python3
"""llama.cpp reference for crates/orinari-models/examples/bench_local.rs.

Same GGUF, same prompts (the GGUF's chat template around the same prose, cut
at the same token counts), same measurements, n_threads=2:

  pp200/pp512  prompt tokens / wall time from eval start to the first greedy
               token chosen (what a client waits for)
  ttft200      that wall time for the 200-token prompt
  gen          128 greedy tokens (end-of-turn ignored): tokens after the
               first / wall time after the first
  turn10       a conversation as in bench_local.rs (a numbered ~800-token
               text, eight short questions each answered greedily in at most
               64 tokens and sent back as history), then turn 10's time to
               first token: with llama.cpp's server-style prompt cache (the
               context keeps the longest common prefix with the previous
               prompt and evaluates only the rest: what llama-cpp-python's
               `generate` and llama-server's `cache_prompt` do), and cold
  memory       VmRSS after load and VmHWM at the end (includes the Python
               interpreter, reported separately as rss_before_load_mib)

llama.cpp's own counters (llama_perf_context: t_p_eval_ms, t_eval_ms) are
reported next to the wall-clock figures. Prints one JSON line.

    python bench/llama_cpp_bench.py [--model PATH] [--threads 2] [--reps 3] [--gen 128]
"""

import argparse
import ctypes
import json
import os
import statistics
import time

import jinja2.sandbox
import llama_cpp
import numpy as np
from llama_cpp import Llama

# Must match PROSE in bench_local.rs.
PROSE = (
    "The harbour town woke slowly. Fishing boats returned with the tide, "
    "and the market filled with voices arguing over prices of cod, crab and mackerel. "
    "A baker on the corner sold warm rolls to sailors, while children ran between the "
    "stalls chasing a dog that had stolen a sausage. By noon the sun burned off the fog "
    "and the old lighthouse keeper climbed his hill to read the weather in the clouds. "
)
GENERATE_PROMPT = "Write a long, detailed story about a dragon who learns to bake bread."
# Must match QUESTIONS in bench_local.rs.
QUESTIONS = [
    "Who sold warm rolls, and to whom?",
    "What did the children chase?",
    "What happened at noon?",
    "Where did the lighthouse keeper go?",
    "Which fish were people arguing about?",
    "Describe the mood of the market in a few sentences.",
    "What time of day did the town wake?",
    "Give the text a title.",
    "List three things a visitor would smell there.",
]


def document(n):
    return f"Document {n}. Read this text, then answer my questions about it.\n\n" + PROSE * 9


def default_model():
    if os.environ.get("ORINARI_MODEL_PATH"):
        return os.environ["ORINARI_MODEL_PATH"]
    cache = os.environ.get("ORINARI_CACHE_DIR")
    if not cache:
        xdg = os.environ.get("XDG_CACHE_HOME")
        cache = os.path.join(xdg, "orinari") if xdg else os.path.expanduser("~/.cache/orinari")
    return os.path.join(cache, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def memory_mib():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                fields[k] = int(v.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def split_inclusive(s, sep=" "):
    parts, start = [], 0
    while True:
        i = s.find(sep, start)
        if i < 0:
            if start < len(s):
                parts.append(s[start:])
            return parts
        parts.append(s[start : i + 1])
        start = i + 1


class Bench:
    def __init__(self, model, threads):
        self.llm = Llama(
            model_path=model,
            n_ctx=2048,
            n_batch=512,
            n_ubatch=512,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=False,
            verbose=False,
        )
        self.ctx = self.llm._ctx.ctx
        self.n_vocab = self.llm.n_vocab()
        env = jinja2.sandbox.ImmutableSandboxedEnvironment()
        self.template = env.from_string(self.llm.metadata["tokenizer.chat_template"])
        self.end_of_turn = {
            self.llm.token_eos(),
            *self.llm.tokenize(b"<|im_end|>", add_bos=False, special=True),
            *self.llm.tokenize(b"<|endoftext|>", add_bos=False, special=True),
        }

    def chat_ids(self, content):
        return self.messages_ids([{"role": "user", "content": content}])

    def messages_ids(self, messages):
        text = self.template.render(
            messages=messages,
            add_generation_prompt=True,
            bos_token="",
            eos_token="",
        )
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def eval_reusing(self, ids):
        """Evaluate a prompt keeping the longest common prefix of what the
        context already holds (at least the last prompt token is evaluated)."""
        held = self.llm._input_ids[: self.llm.n_tokens]
        common = 0
        for a, b in zip(held, ids[:-1]):
            if a != b:
                break
            common += 1
        self.llm.n_tokens = common
        self.llm.eval(ids[common:])

    def answer(self, messages, limit):
        """Greedy answer of at most `limit` tokens, with the prompt cache."""
        self.eval_reusing(self.messages_ids(messages))
        out = []
        while True:
            tok = self.argmax()
            if tok in self.end_of_turn:
                break
            out.append(tok)
            if len(out) >= limit:
                break
            self.llm.eval([tok])
        return self.llm.detokenize(out).decode("utf-8", errors="ignore")

    def conversation(self, n):
        msgs = [{"role": "user", "content": document(n)}]
        for q in QUESTIONS:
            msgs.append({"role": "assistant", "content": self.answer(msgs, 64)})
            msgs.append({"role": "user", "content": q})
        return msgs

    def turn10(self, msgs, cached):
        ids = self.messages_ids(msgs)
        t0 = time.perf_counter()
        if cached:
            self.eval_reusing(ids)
        else:
            self.llm.reset()
            self.llm.eval(ids)
        self.argmax()
        return time.perf_counter() - t0, len(ids)

    def prompt_of(self, target):
        words = split_inclusive(PROSE)
        content, i = "Summarise this text in one sentence. ", 0
        while True:
            ids = self.chat_ids(content)
            if len(ids) >= target:
                return ids
            content += words[i % len(words)]
            i += 1

    def argmax(self):
        ptr = llama_cpp.llama_get_logits_ith(self.ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def perf(self):
        return llama_cpp.llama_perf_context(self.ctx)

    def run(self, ids, generate):
        """Returns (seconds to first token, seconds for the rest, tokens, perf)."""
        self.llm.reset()
        llama_cpp.llama_perf_context_reset(self.ctx)
        t0 = time.perf_counter()
        self.llm.eval(ids)
        tok = self.argmax()
        t1 = time.perf_counter()
        for _ in range(generate - 1):
            self.llm.eval([tok])
            tok = self.argmax()
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, generate, self.perf()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gen", type=int, default=128)
    a = ap.parse_args()
    started = time.perf_counter()

    rss_before, _ = memory_mib()
    t = time.perf_counter()
    b = Bench(a.model, a.threads)
    load_s = time.perf_counter() - t
    rss_after_load, _ = memory_mib()

    p200, p512 = b.prompt_of(200), b.prompt_of(512)
    gen_prompt = b.chat_ids(GENERATE_PROMPT)
    b.run(p512, 2)  # warm-up

    ttft200, pp512, gen_rate, pp_counter, gen_counter = [], [], [], [], []
    for _ in range(max(1, a.reps)):
        first, _, _, perf = b.run(p200, 1)
        ttft200.append(first)
        pp_counter.append(perf.n_p_eval / (perf.t_p_eval_ms / 1e3))
        first, _, _, perf = b.run(p512, 1)
        pp512.append(first)
        _, rest, n, perf = b.run(gen_prompt, a.gen)
        gen_rate.append((n - 1) / rest)
        gen_counter.append(perf.n_eval / (perf.t_eval_ms / 1e3))
    turn10, turn10_cold, turn10_tokens = [], [], 0
    for rep in range(max(1, a.reps)):
        msgs = b.conversation(rep + 1)
        secs, turn10_tokens = b.turn10(msgs, cached=True)
        turn10.append(secs)
        turn10_cold.append(b.turn10(msgs, cached=False)[0])
    rss_end, hwm = memory_mib()
    ttft = statistics.median(ttft200)
    print(
        json.dumps(
            {
                "engine": "llama.cpp",
                "llama_cpp_python": llama_cpp.__version__,
                "model": os.path.basename(a.model),
                "threads": a.threads,
                "reps": a.reps,
                "load_s": round(load_s, 3),
                "pp200_tokens": len(p200),
                "pp200_tok_s": round(len(p200) / ttft, 1),
                "pp200_tok_s_counter": round(statistics.median(pp_counter), 1),
                "pp512_tokens": len(p512),
                "pp512_tok_s": round(len(p512) / statistics.median(pp512), 1),
                "ttft200_ms": round(ttft * 1e3, 1),
                "gen_tokens": a.gen,
                "gen_tok_s": round(statistics.median(gen_rate), 1),
                "gen_tok_s_counter": round(statistics.median(gen_counter), 1),
                "turn10_prompt_tokens": turn10_tokens,
                "turn10_ttft_ms": round(statistics.median(turn10) * 1e3, 1),
                "turn10_cold_ms": round(statistics.median(turn10_cold) * 1e3, 1),
                "rss_before_load_mib": round(rss_before, 1),
                "rss_after_load_mib": round(rss_after_load, 1),
                "rss_end_mib": round(rss_end, 1),
                "peak_rss_mib": round(hwm, 1),
                "wall_s": round(time.perf_counter() - started, 2),
                "cpu_s": round(sum(os.times()[:2]), 2),
                "system_info": llama_cpp.llama_print_system_info().decode().strip(),
            }
        )
    )


if __name__ == "__main__":
    main()
