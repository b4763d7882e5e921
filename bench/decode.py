"""How fast SSI frames become typed domain messages.

Decodes the recorded sample day (edge cases, rejects and all) many times over with `decode_frame`, and, as the
baseline measured in the same run, the same frames with the standard library's json (both layers, no validation,
no domain objects). Prints frames/s for each and their ratio.

    python bench/decode.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from shared.messages.ssi import Decoded, decode_frame

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "replay-day.jsonl"


def stdlib_double_decode(line: bytes) -> object:
    try:
        envelope = json.loads(line)
        content = envelope["Content"]
        return json.loads(content) if isinstance(content, str) else content
    except (ValueError, TypeError, KeyError):
        return None


def measure(decode, lines: list[bytes], rounds: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(rounds):
        for line in lines:
            decode(line)
    return len(lines) * rounds / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    accepted = sum(isinstance(decode_frame(line), Decoded) for line in lines)
    measure(decode_frame, lines, 3)  # warm caches
    ours = measure(decode_frame, lines, args.rounds)
    baseline = measure(stdlib_double_decode, lines, args.rounds)
    frames = len(lines) * args.rounds
    print(f"frames per run: {frames:,} ({accepted}/{len(lines)} of the sample day accepted)")
    print(f"decode_frame (typed, validated, domain messages): {ours:,.0f} frames/s")
    print(f"baseline stdlib json, both layers, untyped:       {baseline:,.0f} frames/s")
    print(f"ratio decode_frame / baseline: {ours / baseline:.2f}")


if __name__ == "__main__":
    main()
