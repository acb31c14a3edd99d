"""Summarise a py-spy raw (collapsed) profile: samples per thread and the heaviest frames.

    py-spy record --threads --idle -f raw -o prof.txt -- hookline worker ...
    python bench/profile_summary.py prof.txt [--top 25] [--match hookline/]

Inclusive share = samples whose stack contains the frame / samples of that thread.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("path")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--match", default="", help="only frames whose text contains this")
    args = p.parse_args()
    per_thread: Counter[str] = Counter()
    inclusive: dict[str, Counter[str]] = defaultdict(Counter)
    leaf: dict[str, Counter[str]] = defaultdict(Counter)
    with open(args.path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = stack.split(";")
            thread = re.sub(r"\(\d+\)|0x[0-9a-f]+", "", frames[0]).strip()
            thread = (
                "MainThread"
                if "MainThread" in thread
                else (
                    "hookline-db"
                    if "hookline-db" in stack
                    or "_on_db" in stack
                    or "ThreadPoolExecutor" in thread
                    or "_worker (concurrent" in stack
                    else thread
                )
            )
            per_thread[thread] += n
            names = [re.sub(r":\d+\)", ")", fr) for fr in frames[1:]]
            for name in set(names):
                if args.match in name:
                    inclusive[thread][name] += n
            if names:
                leaf[thread][names[-1]] += n
    total = sum(per_thread.values())
    for thread, n in per_thread.most_common():
        print(f"\n== {thread}: {n} samples ({n / total:.0%} of all)")
        print("  inclusive:")
        for name, c in inclusive[thread].most_common(args.top):
            print(f"    {c / n:6.1%}  {name}")
        print("  self (leaf):")
        for name, c in leaf[thread].most_common(10):
            print(f"    {c / n:6.1%}  {name}")


if __name__ == "__main__":
    main()
