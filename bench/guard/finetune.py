"""Would fine-tuning the guard's encoder help? An experiment for issue #22
(BENCHMARKS.md, "Fine-tuning the guard's encoder"); nothing here ships.

all-MiniLM-L6-v2 (the `orinari-embed` model the guard loads) with its first
four layers frozen and its last two trained, with a logistic head over the
sentence vector (the mean over the tokens, L2 normalized: the vector
`orinari-embed` serves), next to the guard's recipe for that encoder
(frozen, a logistic head over the same vectors) trained on the same texts
in the same run. Training texts: the S-Labs and neuralchemy train splits as
they are, or with `--corpus FILE` the guard's own training texts as its
encoder sees them (`guard-train DATA --encoder-texts FILE`: every channel,
framed copies, the hand-written sets, normalized, first window).

Each detector gets one threshold: the lowest score that flags <= 1 % of the
benign texts of each validation group (every second S-Labs validation text
and every neuralchemy one; with `--corpus`, the guard's user-message groups,
its hand-written hard benign prompts among them), and is tested on the
splits the guard is tested on (every second S-Labs test text, every
neuralchemy one). A last column gives the recall at 1 % of the test split's
own benign texts: the ranking alone, an oracle chosen on the test split,
not an operating point. Nothing is fitted on a test split.

One window of at most 128 tokens. Deterministic on one CPU (fixed seeds and
order); JAX on the CPU, 1-4 minutes an epoch on two cores.

    bash bench/guard/finetune.sh DATA MODEL [--corpus FILE]

DATA: `scripts/fetch-guard-data.sh`; MODEL: `scripts/fetch-embed-model.sh`.
FINETUNE_EPOCHS (2), FINETUNE_LR (5e-5) and FINETUNE_FROZEN (4: the layers
kept frozen) change the recipe; FINETUNE_LEAVE_OUT=s-labs|neuralchemy trains
and fits without that set, which is still tested (the leave-one-out
question).
"""

import json
import math
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MAX_TOKENS = 128
BUCKETS = (16, 32, 64, 128)
BATCH = 32
HEADS = 12
FROZEN = int(os.environ.get("FINETUNE_FROZEN", "4"))
LEARNING_RATE = float(os.environ.get("FINETUNE_LR", "5e-5"))
EPOCHS = int(os.environ.get("FINETUNE_EPOCHS", "2"))
LEAVE_OUT = os.environ.get("FINETUNE_LEAVE_OUT", "")
# The short names of a BERT layer's tensors and their HF names.
NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "o": "attention.output.dense",
    "ln1": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "ln2": "output.LayerNorm",
}
FP_BUDGET = 0.01


def read_rows(data: Path, set_name: str, split: str, every: int = 1):
    with open(data / set_name / f"{split}.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [(r["text"], int(r["label"])) for r in rows[::every]]


def read_corpus(path: Path):
    """The guard's own training texts (`guard-train DATA --encoder-texts
    FILE`: every channel, framed copies, its own hand-written sets, each as
    the encoder sees it), each repeated by its weight; and the validation
    user messages by threshold group. Without the left-out set, if any."""
    train, valid = [], {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["set"] == LEAVE_OUT:
                continue
            if r["split"] == "train":
                train += [(r["text"], int(r["label"]))] * r["weight"]
            elif r["channel"] == "user":
                valid.setdefault(r["group"], []).append((r["text"], int(r["label"])))
    return train, valid


def layer_params(w, i):
    p = f"encoder.layer.{i}."
    layer = {}
    for short, long in NAMES.items():
        if short.startswith("ln"):
            layer[short] = (jnp.asarray(w[p + long + ".weight"]), jnp.asarray(w[p + long + ".bias"]))
        else:
            layer[short] = (jnp.asarray(w[p + long + ".weight"].T), jnp.asarray(w[p + long + ".bias"]))
    return layer


def layer_norm(x, ln):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + 1e-12) * ln[0] + ln[1]


def bert_layer(layer, h, mask):
    b, n, d = h.shape
    dh = d // HEADS

    def heads(x):
        return x.reshape(b, n, HEADS, dh).transpose(0, 2, 1, 3)

    q, k, v = (heads(h @ layer[t][0] + layer[t][1]) for t in ("q", "k", "v"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh)
    scores = scores + (1.0 - mask[:, None, None, :]) * -1e9
    ctx = jax.nn.softmax(scores, axis=-1) @ v
    ctx = ctx.transpose(0, 2, 1, 3).reshape(b, n, d)
    h = layer_norm(h + ctx @ layer["o"][0] + layer["o"][1], layer["ln1"])
    inner = jax.nn.gelu(h @ layer["fi"][0] + layer["fi"][1], approximate=False)
    return layer_norm(h + inner @ layer["fo"][0] + layer["fo"][1], layer["ln2"])


def sentence_vector(h, mask):
    """The mean over the real tokens, L2 normalized (`orinari-embed`'s)."""
    mean = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return mean / jnp.maximum(jnp.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


def tokenize(tokenizer, texts):
    ids = []
    for enc in tokenizer.encode_batch(texts):
        t = enc.ids[:MAX_TOKENS]
        if len(t) == MAX_TOKENS:
            t[-1] = enc.ids[-1]  # keep [SEP]
        ids.append(t)
    return ids


def bucket_of(n):
    return next(b for b in BUCKETS if n <= b)


def batches(ids, order, batch=BATCH):
    """Index batches of texts sharing a bucket, in `order`'s order within it."""
    by_bucket = {b: [] for b in BUCKETS}
    for i in order:
        by_bucket[bucket_of(len(ids[i]))].append(i)
    out = []
    for b, members in by_bucket.items():
        for s in range(0, len(members), batch):
            out.append((b, members[s : s + batch]))
    return out


def padded(ids, members, width):
    tok = np.zeros((len(members), width), dtype=np.int32)
    mask = np.zeros((len(members), width), dtype=np.float32)
    for row, i in enumerate(members):
        tok[row, : len(ids[i])] = ids[i]
        mask[row, : len(ids[i])] = 1.0
    return tok, mask


def main() -> None:
    args = sys.argv[1:]
    corpus = None
    if "--corpus" in args[:-1]:
        at = args.index("--corpus")
        corpus = Path(args[at + 1])
        del args[at : at + 2]
    if len(args) != 2:
        sys.exit("usage: finetune.py DATA MODEL [--corpus FILE]")
    data, model = Path(args[0]), Path(args[1])
    w = load_file(str(model / "model.safetensors"))
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()

    if corpus is not None:
        train, valid = read_corpus(corpus)
    else:
        kept = [s for s in ("s-labs", "neuralchemy") if s != LEAVE_OUT]
        train = [row for s in kept for row in read_rows(data, s, "train")]
        valid = {s: read_rows(data, s, "validation", 2 if s == "s-labs" else 1) for s in kept}
    test = {
        "s-labs": read_rows(data, "s-labs", "test", 2),
        "neuralchemy": read_rows(data, "neuralchemy", "test"),
    }
    texts = [t for t, _ in train]
    spans = {}
    for kind, sets in (("valid", valid), ("test", test)):
        for name, rows in sets.items():
            spans[(kind, name)] = (len(texts), len(texts) + len(rows))
            texts += [t for t, _ in rows]
    labels = np.array(
        [l for _, l in train]
        + [l for kind in (valid, test) for rows in kind.values() for _, l in rows],
        dtype=np.float32,
    )
    ids = tokenize(tokenizer, texts)
    print(
        f"{len(train)} train, {sum(map(len, valid.values()))} validation, "
        f"{sum(map(len, test.values()))} test texts (left out: {LEAVE_OUT or 'none'}); JAX {jax.__version__} on {jax.devices()[0].platform}",
        file=sys.stderr,
    )

    emb = {
        "word": jnp.asarray(w["embeddings.word_embeddings.weight"]),
        "pos": jnp.asarray(w["embeddings.position_embeddings.weight"]),
        "type": jnp.asarray(w["embeddings.token_type_embeddings.weight"][0]),
        "ln": (jnp.asarray(w["embeddings.LayerNorm.weight"]), jnp.asarray(w["embeddings.LayerNorm.bias"])),
    }
    frozen = [layer_params(w, i) for i in range(FROZEN)]
    top = [layer_params(w, i) for i in range(FROZEN, 6)]

    @jax.jit
    def bottom(tok, mask):
        n = tok.shape[1]
        h = emb["word"][tok] + emb["pos"][:n] + emb["type"]
        h = layer_norm(h, emb["ln"])
        for layer in frozen:
            h = bert_layer(layer, h, mask)
        return h

    started = time.perf_counter()
    hidden = [None] * len(texts)
    for width, members in batches(ids, range(len(texts)), 128):
        tok, mask = padded(ids, members, width)
        h = np.asarray(bottom(tok, mask))
        for row, i in enumerate(members):
            hidden[i] = h[row, : len(ids[i])]
    print(f"embeddings and {FROZEN} frozen layers for every text: {time.perf_counter() - started:.0f} s", file=sys.stderr)

    def stack(members, width):
        h = np.zeros((len(members), width, 384), dtype=np.float32)
        mask = np.zeros((len(members), width), dtype=np.float32)
        for row, i in enumerate(members):
            h[row, : len(hidden[i])] = hidden[i]
            mask[row, : len(hidden[i])] = 1.0
        return h, mask

    def forward_top(layers, h, mask):
        for layer in layers:
            h = bert_layer(layer, h, mask)
        return h

    def forward(params, h, mask):
        pooled = sentence_vector(forward_top(params["top"], h, mask), mask)
        return pooled @ params["head"][0] + params["head"][1]

    score_batch = jax.jit(forward)

    def scores(params, members):
        out = np.zeros(len(texts), dtype=np.float32)
        for width, group in batches(ids, members, 128):
            h, mask = stack(group, width)
            out[group] = np.asarray(score_batch(params, h, mask))
        return out

    def report(name, params, extra=""):
        all_eval = [i for (a, b) in spans.values() for i in range(a, b)]
        s = scores(params, all_eval)
        threshold = max(
            budget_cut(s[a:b][labels[a:b] == 0]) for a, b in (spans[("valid", g)] for g in valid)
        )
        for set_name in test:
            a, b = spans[("test", set_name)]
            flagged = s[a:b] > threshold
            attacks = labels[a:b] == 1
            caught = int((flagged & attacks).sum())
            fp = int((flagged & ~attacks).sum())
            # The ranking alone: recall at the threshold that flags 1 % of
            # this test split's own benign texts (an oracle, not an
            # operating point: it is chosen on the test split).
            oracle = int((s[a:b][attacks] > budget_cut(s[a:b][~attacks])).sum())
            print(
                f"| {set_name} test | {name}{extra} | {100 * caught / attacks.sum():.1f} % "
                f"({caught}/{int(attacks.sum())}) | {100 * fp / (~attacks).sum():.1f} % "
                f"({fp}/{int((~attacks).sum())}) | {100 * oracle / attacks.sum():.1f} % |"
            )

    train_idx = list(range(len(train)))
    y = jnp.asarray(labels)

    def loss_fn(params, h, mask, target):
        logits = forward(params, h, mask)
        return optax.sigmoid_binary_cross_entropy(logits, target).mean()

    def fit(params, epochs, lr_top, lr_head, seed):
        steps = epochs * len(batches(ids, train_idx))
        tx = optax.multi_transform(
            {
                "top": optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr_top, steps // 10, steps), weight_decay=0.01),
                "head": optax.adam(optax.linear_schedule(lr_head, 0.0, steps)),
            },
            lambda p: {"top": jax.tree.map(lambda _: "top", p["top"]), "head": ("head", "head")},
        )
        state = tx.init(params)
        step = jax.jit(lambda params, state, *batch: train_step(tx, loss_fn, params, state, *batch))
        rng = np.random.default_rng(seed)
        for epoch in range(epochs):
            started = time.perf_counter()
            order = rng.permutation(train_idx)
            plan = batches(ids, order)
            rng.shuffle(plan)
            total = 0.0
            for width, members in plan:
                h, mask = stack(members, width)
                params, state, loss = step(params, state, h, mask, y[np.asarray(members)])
                total += float(loss) * len(members)
            print(
                f"epoch {epoch + 1}: loss {total / len(train_idx):.4f}, {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
            )
        return params

    print(
        "| test split | detector | recall (attacks) | false positives (benign) "
        "| recall at 1 % of the split's own benign (oracle) |"
    )
    print("| --- | --- | --- | --- | --- |")
    # The guard's recipe for this encoder: frozen, its sentence vectors, a
    # logistic head (full batch, a little L2).
    pooled_batch = jax.jit(lambda h, mask: sentence_vector(forward_top(top, h, mask), mask))
    pooled = np.zeros((len(train), 384), dtype=np.float32)
    for width, group in batches(ids, train_idx, 128):
        h, mask = stack(group, width)
        pooled[group] = np.asarray(pooled_batch(h, mask))
    x_train, y_train = jnp.asarray(pooled), y[: len(train)]

    def head_loss(head):
        logits = x_train @ head[0] + head[1]
        return optax.sigmoid_binary_cross_entropy(logits, y_train).mean() + 1e-5 * (head[0] ** 2).sum()

    head = (jnp.zeros(384), jnp.zeros(()))
    tx = optax.adam(0.05)
    state = tx.init(head)
    head_step = jax.jit(lambda head, state: train_step(tx, head_loss, head, state))
    for _ in range(1000):
        head, state, _ = head_step(head, state)
    report("MiniLM frozen + logistic head (the guard's encoder recipe)", {"top": top, "head": head})
    tuned = fit({"top": top, "head": head}, EPOCHS, LEARNING_RATE, 1e-3, 7)
    report(
        f"MiniLM, layers {FROZEN + 1}-6 fine-tuned + logistic head",
        tuned,
        f" ({EPOCHS} epochs, rate {LEARNING_RATE:g}, from that head)",
    )


def train_step(tx, loss_fn, params, state, *batch):
    """One step of `tx` on `loss_fn(params, *batch)`: the new parameters,
    the optimizer's state and the loss."""
    loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss


def budget_cut(benign):
    """The lowest threshold (scores strictly above it are flagged) that flags
    at most `FP_BUDGET` of these benign scores."""
    benign = np.sort(benign)
    allowed = int(math.floor(FP_BUDGET * len(benign)))
    return benign[len(benign) - allowed - 1] if allowed < len(benign) else -np.inf


if __name__ == "__main__":
    main()
