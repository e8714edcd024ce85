"""Score texts with the best open prompt-injection detector that installs
here, for the side-by-side rows of `make bench-guard`.

stackone-defender==0.9.4 (PyPI, Apache-2.0) ships its classifier in the
wheel: all-MiniLM-L6-v2 fine-tuned (last two layers, a main and an
auxiliary head) on 23 public and internal sets, exported to ONNX and
quantized to int8 (23 MB), with its tokenizer; no download at run time.
Its `Tier2Classifier` normalizes the text (NFKC, boundary markers,
decorative runs), scores it and calibrates the score (`sigmoid(logit /
2.41)`); its shipped operating point is 0.52. Texts shorter than its
minimum length are skipped (score 0), as the package does.

    python open-detector.py TEXTS OUT

TEXTS: JSON lines `{"text": ...}` (`guard-eval DATA --texts TEXTS`).
OUT: a first line naming the detector and its threshold, then one line
`{"text": ..., "score": ...}` per text (`guard-eval DATA --open-detector
OUT`).
"""

import json
import sys
import time

from stackone_defender.classifiers.tier2_classifier import Tier2Classifier

PACKAGE = "stackone-defender==0.9.4"


def main() -> None:
    texts_path, out_path = sys.argv[1], sys.argv[2]
    with open(texts_path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    classifier = Tier2Classifier()
    classifier.warmup()
    started = time.perf_counter()
    with open(out_path, "w", encoding="utf-8") as out:
        out.write(
            json.dumps(
                {
                    "detector": f"{PACKAGE} (MiniLM fine-tuned, ONNX int8)",
                    "threshold": classifier._high_risk_threshold,
                }
            )
            + "\n"
        )
        for i, text in enumerate(texts):
            score = float(classifier.classify(text).score)
            out.write(json.dumps({"text": text, "score": score}) + "\n")
            if (i + 1) % 1000 == 0:
                elapsed = time.perf_counter() - started
                print(f"scored {i + 1} of {len(texts)} ({elapsed:.0f} s)", file=sys.stderr)
    elapsed = time.perf_counter() - started
    print(
        f"{PACKAGE}: {len(texts)} texts in {elapsed:.0f} s "
        f"({1000 * elapsed / max(len(texts), 1):.1f} ms a text, one process)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
