"""Check every answer of bench_structured against its schema with the
reference validator (`jsonschema`, Draft 2020-12, formats checked).

Usage: validate.py ANSWERS.jsonl SCHEMAS.json
Prints a summary; exits 1 when any answer does not parse or validate.
"""

import json
import sys

import jsonschema


def main():
    answers_path, schemas_path = sys.argv[1], sys.argv[2]
    schemas = {s["name"]: s["schema"] for s in json.load(open(schemas_path))}
    total, bad = 0, []
    for line in open(answers_path):
        a = json.loads(line)
        total += 1
        where = f'{a["name"]} seed {a["seed"]}'
        try:
            value = json.loads(a["text"])
        except json.JSONDecodeError as e:
            bad.append(f"{where}: does not parse ({e}; finish_reason {a['finish_reason']})")
            continue
        validator = jsonschema.Draft202012Validator(
            schemas[a["name"]], format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        errors = [e.message for e in validator.iter_errors(value)]
        if errors:
            bad.append(f"{where}: {errors[0]}")
    for b in bad:
        print(f"structured: FAIL {b}")
    print(f"structured: {total - len(bad)}/{total} answers parse and validate "
          f"({len(schemas)} schemas)")
    sys.exit(1 if bad or total == 0 else 0)


if __name__ == "__main__":
    main()
