"""Dataset hashing and validation throughput against ``sha256sum`` on the same JSONL file.

Generates a tagged SFT JSONL of at least 500 MB in a temporary directory (deleted at the
end), then measures, best of ``--repeat`` runs on a warm page cache:

- ``sha256sum FILE`` (the baseline) and, where installed, ``openssl dgst -sha256`` for reference,
- our hashing (:func:`verifily_core.datasets.hash_file`, what ``verifily dataset verify`` does),
- our hashing + row validation in one pass (:func:`verifily_core.datasets.rows.scan_file`
  with the SFT task's ``validate_row``, what ``dataset create`` and training do),

each of ours in a fresh child process whose peak RSS (``getrusage``) is reported.
Targets: hashing at least 0.7 of ``sha256sum``'s throughput, peak RSS under 200 MB.

    python benchmarks/bench_dataset_hashing.py [--size-mb 512] [--repeat 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("apple", "river", "stone", "cloud", "green", "light", "music", "paper", "table", "water",
         "house", "bread", "chair", "dream", "field", "glass", "horse", "lemon", "night", "ocean")
SOURCES = ("human", "synthetic", "ai_contaminated")
DIFFICULTIES = ("easy", "medium", "hard")


def generate(path: Path, size_mb: int, seed: int = 0) -> int:
    """Write tagged SFT rows until the file holds ``size_mb`` MiB; returns the row count."""
    rng = random.Random(seed)
    target = size_mb << 20
    written = rows = 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < target:
            chunk = []
            for _ in range(2000):
                words = rng.choices(WORDS, k=rng.randint(20, 80))
                row = {"instruction": f"Summarize item {rows}: " + " ".join(words[:8]),
                       "input": " ".join(words), "output": " ".join(words[::4]),
                       "tags": {"source": SOURCES[rows % 3], "difficulty": rng.choice(DIFFICULTIES)}}
                chunk.append(json.dumps(row))
                rows += 1
            text = "\n".join(chunk) + "\n"
            fh.write(text)
            written += len(text.encode("utf-8"))
    return rows


def child(mode: str, path: str) -> None:
    """Run one measurement in this (fresh) process and print it as JSON."""
    from verifily_core.datasets import hash_file
    from verifily_core.datasets.rows import scan_file
    from verifily_core.plugins import load_registries

    validate = load_registries().tasks.get("sft").validate_row
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if mode == "hash":
        digest, rows = hash_file(path), None
    else:
        scan = scan_file(path, validate)
        scan.raise_if_invalid()
        digest, rows = scan.sha256, scan.num_rows
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"seconds": seconds, "digest": digest, "rows": rows,
                      "peak_rss_mb": peak / 1024, "rss_before_mb": start_rss / 1024}))


def _ours(mode: str, path: Path) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", mode, str(path)], capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _sha256sum(path: Path, tool: str = "sha256sum") -> tuple[float, str]:
    cmd = ["openssl", "dgst", "-sha256", "-r", str(path)] if tool == "openssl" else ["sha256sum", str(path)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, "sha256:" + res.stdout.split()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write the temporary file (default: system temp)")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if not shutil.which("sha256sum"):
        sys.exit("sha256sum not found")
    tmp = Path(tempfile.mkdtemp(prefix="verifily-bench-", dir=args.dir))
    try:
        path = tmp / "train.jsonl"
        t0 = time.perf_counter()
        rows = generate(path, args.size_mb)
        size = path.stat().st_size
        print(f"generated {size / 2**20:.0f} MiB, {rows} rows in {time.perf_counter() - t0:.1f} s")
        _sha256sum(path)  # warm the page cache
        base = [_sha256sum(path) for _ in range(args.repeat)]
        hashed = [_ours("hash", path) for _ in range(args.repeat)]
        scanned = [_ours("scan", path) for _ in range(args.repeat)]
        t_base, digest = min(base)
        t_hash = min(r["seconds"] for r in hashed)
        t_scan = min(r["seconds"] for r in scanned)
        assert all(r["digest"] == digest for r in hashed + scanned), "digests differ from sha256sum"
        assert all(r["rows"] == rows for r in scanned), "row count differs"
        mib = size / 2**20
        print(f"sha256sum              {t_base:6.2f} s  {mib / t_base:7.0f} MiB/s")
        if shutil.which("openssl"):  # a second reference: OpenSSL's (often hardware-accelerated) sha256
            t_ssl = min(_sha256sum(path, "openssl")[0] for _ in range(args.repeat))
            print(f"openssl dgst -sha256   {t_ssl:6.2f} s  {mib / t_ssl:7.0f} MiB/s  (our hashing: "
                  f"{t_ssl / t_hash:.2f} of it)")
        print(f"ours: hashing          {t_hash:6.2f} s  {mib / t_hash:7.0f} MiB/s  "
              f"ratio {t_base / t_hash:.2f} of sha256sum (target >= 0.70)  "
              f"peak RSS {max(r['peak_rss_mb'] for r in hashed):.0f} MB")
        print(f"ours: hash + validate  {t_scan:6.2f} s  {mib / t_scan:7.0f} MiB/s  "
              f"ratio {t_base / t_scan:.2f} of sha256sum  "
              f"peak RSS {max(r['peak_rss_mb'] for r in scanned):.0f} MB (target < 200 MB; "
              f"{hashed[0]['rss_before_mb']:.0f} MB after imports)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
