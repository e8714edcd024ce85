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
  concurrent   --concurrent 1,4,8: that many greedy generations of --gen
               tokens (each its own prompt, as in bench_local.rs), started
               together and run by llama.cpp's own batched path, the one its
               server uses: one context with a sequence id per user, every
               prompt prefilled in one llama_batch, then one llama_decode per
               step holding the next token of every sequence still running
               (a sequence leaves at end of turn). Aggregate tok/s
               (completion tokens over the time until the last finished) and
               the p50 / p99 gap between consecutive tokens of a sequence.

llama.cpp's own counters (llama_perf_context: t_p_eval_ms, t_eval_ms) are
reported next to the wall-clock figures. Prints one JSON line.

    python bench/llama_cpp_bench.py [--model PATH] [--threads 2] [--reps 3] [--gen 128]
        [--concurrent 1,4,8] [--single true|false]
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
# Must match SUBJECTS in bench_local.rs: each concurrent user its own prompt.
SUBJECTS = [
    "a dragon who learns to bake bread",
    "a lighthouse keeper and a lost whale",
    "a robot that collects old maps",
    "two sisters crossing a frozen lake",
    "a clockmaker who can repair time",
    "a fox running a small library",
    "a sailor who forgets the sea",
    "a garden that grows at night",
]
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

    def concurrent(self, slots, threads):
        """A second context for `slots` sequences at once (llama.cpp's
        server-style continuous batching)."""
        p = llama_cpp.llama_context_default_params()
        p.n_ctx = 1024 * slots
        p.n_batch = 512 * slots
        p.n_ubatch = 512
        p.n_seq_max = slots
        p.n_threads = threads
        p.n_threads_batch = threads
        ctx = llama_cpp.llama_init_from_model(self.llm._model.model, p)
        if not ctx:
            raise RuntimeError("llama_init_from_model failed")
        return Batched(self, ctx, slots)

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


def percentile(xs, p):
    """Nearest rank, as bench_local.rs computes it; 0 when empty."""
    if not xs:
        return 0.0
    xs = sorted(xs)
    rank = -(-p * len(xs) // 100)
    return xs[min(max(int(rank), 1), len(xs)) - 1]


class Batched:
    def __init__(self, bench, ctx, slots):
        self.b = bench
        self.ctx = ctx
        self.slots = slots
        self.batch = llama_cpp.llama_batch_init(512 * slots, 0, slots)

    def close(self):
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)

    def add(self, token, pos, seq, logits):
        b, i = self.batch, self.batch.n_tokens
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits
        b.n_tokens = i + 1

    def argmax(self, i):
        ptr = llama_cpp.llama_get_logits_ith(self.ctx, i)
        return int(np.ctypeslib.as_array(ptr, shape=(self.b.n_vocab,)).argmax())

    def decode(self):
        rc = llama_cpp.llama_decode(self.ctx, self.batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def run(self, users, generate):
        """Returns (completion tokens, seconds until the last sequence
        finished, every gap between consecutive tokens of a sequence)."""
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        prompts = [
            self.b.chat_ids(f"Write a long, detailed story about {SUBJECTS[u % len(SUBJECTS)]}.")
            for u in range(users)
        ]
        t0 = time.perf_counter()
        self.batch.n_tokens = 0
        rows = {}
        for u, ids in enumerate(prompts):
            for j, tok in enumerate(ids):
                self.add(tok, j, u, j == len(ids) - 1)
            rows[u] = self.batch.n_tokens - 1
        self.decode()
        pos = {u: len(ids) for u, ids in enumerate(prompts)}
        times = {u: [] for u in range(users)}
        produced = {u: 0 for u in range(users)}
        while rows:
            now = time.perf_counter()
            nxt = {}
            for u, i in rows.items():
                tok = self.argmax(i)
                if tok in self.b.end_of_turn:
                    continue
                times[u].append(now - t0)
                produced[u] += 1
                if produced[u] < generate:
                    nxt[u] = tok
            if not nxt:
                break
            self.batch.n_tokens = 0
            rows = {}
            for u, tok in nxt.items():
                self.add(tok, pos[u], u, True)
                rows[u] = self.batch.n_tokens - 1
                pos[u] += 1
            self.decode()
        wall = time.perf_counter() - t0
        gaps = [b - a for ts in times.values() for a, b in zip(ts, ts[1:])]
        return sum(produced.values()), wall, gaps


def concurrent_users(b, users_list, threads, reps, generate):
    if not users_list:
        return []
    slots = max(users_list)
    c = b.concurrent(slots, threads)
    try:
        c.run(slots, 4)  # warm-up at full width
        rows = []
        for users in users_list:
            rates, gaps, tokens = [], [], None
            for _ in range(max(1, reps)):
                n, wall, g = c.run(users, generate)
                rates.append(n / max(wall, 1e-9))
                gaps.extend(g)
                tokens = n if tokens is None else min(tokens, n)
            rows.append(
                {
                    "users": users,
                    "batch": True,
                    "completion_tokens": tokens,
                    "agg_tok_s": round(statistics.median(rates), 1),
                    "itl_p50_ms": round(percentile(gaps, 50) * 1e3, 1),
                    "itl_p99_ms": round(percentile(gaps, 99) * 1e3, 1),
                }
            )
        return rows
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--concurrent", default="1,4,8", help='numbers of users ("" for none)')
    ap.add_argument("--single", default="true", help="false skips the single-user figures")
    a = ap.parse_args()
    users_list = [int(x) for x in a.concurrent.split(",") if x.strip()]
    started = time.perf_counter()

    rss_before, _ = memory_mib()
    t = time.perf_counter()
    b = Bench(a.model, a.threads)
    load_s = time.perf_counter() - t
    rss_after_load, _ = memory_mib()

    out = {
        "engine": "llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        "model": os.path.basename(a.model),
        "threads": a.threads,
        "reps": a.reps,
        "load_s": round(load_s, 3),
    }
    if a.single != "false":
        out.update(single_user(b, a))
    rss_end, hwm = memory_mib()
    out["concurrent"] = concurrent_users(b, users_list, a.threads, a.reps, a.gen)
    _, hwm_all = memory_mib()
    out.update(
        {
            "rss_before_load_mib": round(rss_before, 1),
            "rss_after_load_mib": round(rss_after_load, 1),
            "rss_end_mib": round(rss_end, 1),
            "peak_rss_mib": round(hwm, 1),
            "peak_rss_with_concurrent_mib": round(hwm_all, 1),
            "wall_s": round(time.perf_counter() - started, 2),
            "cpu_s": round(sum(os.times()[:2]), 2),
            "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        }
    )
    print(json.dumps(out))


def single_user(b, a):
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
    ttft = statistics.median(ttft200)
    return {
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
    }

if __name__ == "__main__":
    main()
