"""An independent reference for orinari-embed: all-MiniLM-L6-v2 written
again in numpy (float64), from the same safetensors file, one text at a
time (no batching, no padding): BERT as Hugging Face's `BertModel` computes
it, then sentence-transformers' `Pooling(mean)` and `Normalize`.

sentence-transformers itself needs torch, too heavy for this machine; this
re-implementation shares no code with the Rust one (numpy instead of candle,
float64 instead of float32, unbatched instead of padded batches). The
tokenizer is Hugging Face's `tokenizers`, the library sentence-transformers
tokenizes with (through transformers' BertTokenizerFast), set up as
sentence-transformers sets it: truncation at max_seq_length 256.

    python reference.py MODEL_DIR TEXTS.json OUT.json

TEXTS.json is a JSON list of strings; OUT.json gets a list of vectors.
"""

import json
import math
import struct
import sys

import numpy as np
from tokenizers import Tokenizer

MAX_SEQ_LENGTH = 256


def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__" or meta["dtype"] != "F32":
            continue
        start, end = meta["data_offsets"]
        tensors[name] = (
            np.frombuffer(data[start:end], dtype="<f4").reshape(meta["shape"]).astype(np.float64)
        )
    return tensors


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def encode(w, config, ids):
    h = config["hidden_size"]
    heads = config["num_attention_heads"]
    d = h // heads
    eps = config["layer_norm_eps"]
    n = len(ids)
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def lin(name, v):
            return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q = lin("attention.self.query", x).reshape(n, heads, d).transpose(1, 0, 2)
        k = lin("attention.self.key", x).reshape(n, heads, d).transpose(1, 0, 2)
        v = lin("attention.self.value", x).reshape(n, heads, d).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, h)
        x = layer_norm(
            lin("attention.output.dense", ctx) + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        inner = gelu(lin("intermediate.dense", x))
        x = layer_norm(
            lin("output.dense", inner) + x,
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
            eps,
        )
    mean = x.mean(0)
    return mean / max(np.linalg.norm(mean), 1e-12)


def main():
    model_dir, texts_path, out_path = sys.argv[1:]
    config = json.load(open(f"{model_dir}/config.json"))
    weights = load_safetensors(f"{model_dir}/model.safetensors")
    tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_SEQ_LENGTH)
    texts = json.load(open(texts_path))
    vectors = [encode(weights, config, tokenizer.encode(t).ids).tolist() for t in texts]
    json.dump(vectors, open(out_path, "w"))


if __name__ == "__main__":
    main()
