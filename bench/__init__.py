"""Benchmarks. ``python -m bench`` is the webhook path's throughput and latency benchmark.

``python -m bench`` drives complete four-ones visits through the whole production path (HTTP
POST to the webhook, PTB, the core, the database, the replies out to a local Bot API stand-in)
and, on the same harness with the same updates, a bare PTB echo bot, and prints updates/s, p50
and p99 for both and their ratio. Its modules:

  __main__  the command: options, the run, the report
  harness   the stand-in with the driver's hooks, the bot process, the timed load driver, stats
  servers   entry point of the bot process (the visit bot or the echo bot, webhook mode, uvicorn)
  echo      the bare PTB echo bot behind a bare Starlette webhook endpoint
  visits    the database set-up (schema, roster, bound chat accounts) and the visit script

Other ``bench.*`` modules are benchmarks of their own, each run as ``python -m bench.<name>``.
"""

import os

# The bots run with production settings, which require a DATA_KEY for the phone numbers at rest
# (storage/crypto.py). The benchmarks' own key, the same in the driver that writes the roster and in
# the bot processes it spawns (they inherit the environment); an operator's DATA_KEY wins.
BENCH_DATA_KEY = "bench-only-data-key-0123456789abcdefghijklmnop"
os.environ.setdefault("DATA_KEY", BENCH_DATA_KEY)
