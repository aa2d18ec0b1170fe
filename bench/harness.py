"""The harness both bots run on: stand-in, bot process, timed load driver, statistics.

Layout (2 processes):
  driver process: the Bot API stand-in (uvicorn in a thread) and the load driver (asyncio,
                  one task per simulated user, httpx.AsyncClient)
  bot process:    the bot under test, webhook mode, uvicorn on 127.0.0.1 (bench.servers)

The driver POSTs each update to the webhook with the secret header and times the round trip.
The webhook processes the update inline and answers only when the replies went out, so the round
trip covers HTTP in, PTB, the core, the database and every Bot API call back to the stand-in.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import math
import multiprocessing
import os
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.standins.server import ServedApp
from tests.standins.telegram_api import TEST_TOKEN, TelegramStandin

SECRET = "bench-webhook-secret_0123456789abcdef"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class BenchStandin(TelegramStandin):
    """The test suite's stand-in plus what a load driver needs and its public API lacks.

    * The newest inline keyboard per chat, kept as the bot's calls arrive: ``SimUser.buttons()``
      copies the chat's whole history on every call and ``press()`` without a message id sorts
      every message ever sent, costs that would grow during the run and, being in this process,
      slow down the stand-in the bot is waiting for.
    * ``expect``: what ``deliver()`` does before POSTing (the callback query id becomes known,
      so answerCallbackQuery succeeds), for updates the driver POSTs itself to time them.
    * TCP_NODELAY on its listening socket (see ``start``).
    These lean on the stand-in's private ``_record``, ``_lock``, ``_known_queries``, ``_served``
    and ServedApp's ``_sock``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keyboards: dict[int, tuple[int, list[list[tuple[str, str]]]]] = {}
        self.sends: dict[int, int] = defaultdict(int)  # answers per chat: sendMessage, or editMessageText
        self.last_text: dict[int, str] = {}  # of the last answer: the message's text as it now reads

    def start(self) -> "BenchStandin":
        """Like TelegramStandin.start, with Nagle's algorithm off on the served connections.

        ServedApp binds its socket by hand (proto 0), and asyncio only sets TCP_NODELAY on
        connections whose socket says IPPROTO_TCP; the Bot API responses then stall ~40 ms on
        every call (Nagle against the client's delayed ACK). uvicorn.run, as in production,
        creates its socket through getaddrinfo and does get TCP_NODELAY. Accepted sockets
        inherit the option from the listener on Linux.
        """
        if self._served is None:
            self._closing = False
            served = ServedApp(self.app)
            served.bind()
            served._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._served = served.start()
        return self

    def _record(self, kind, method, chat_id, message, p, markup, **extra):  # called under self._lock
        super()._record(kind, method, chat_id, message, p, markup, **extra)
        if chat_id is None or message is None:
            return
        inline = (message.get("reply_markup") or {}).get("inline_keyboard")
        if inline:
            self.keyboards[chat_id] = (message["message_id"], [
                [(b.get("text"), b.get("callback_data")) for b in row] for row in inline])
        elif self.keyboards.get(chat_id, (None,))[0] == message["message_id"]:
            del self.keyboards[chat_id]  # edited without its keyboard: that prompt was answered
        # The visit bot answers a press in the pressed message itself (handlers/telegram.py), the
        # echo bot with a new message; a press answered by neither is caught by the driver.
        if method in ("sendMessage", "editMessageText"):
            self.sends[chat_id] += 1
            self.last_text[chat_id] = message.get("text") or ""

    def expect(self, update: dict[str, Any]) -> None:
        query = update.get("callback_query")
        if query:
            with self._lock:
                self._known_queries.add(str(query["id"]))

    def restamp(self, update: dict[str, Any]) -> dict[str, Any]:
        """A copy of an update with a fresh update id (and callback query id), for a replay."""
        update = copy.deepcopy(update)
        update["update_id"] = self._next_update_id()
        if "callback_query" in update:
            update["callback_query"]["id"] = self._next_callback_id()
        return update


class BotProcess:
    """The bot under test in its own process ('spawn': a fresh interpreter, its own GIL), or in
    ``processes`` processes on one port (SO_REUSEPORT: the kernel spreads the connections over them,
    as ``python -m bot serve --workers N`` has uvicorn do)."""

    def __init__(self, kind: str, options: dict[str, Any], start_timeout: float = 60.0, processes: int = 1):
        self.kind = kind
        self.options = dict(options, reuse_port=processes > 1)
        self.processes = processes
        self._start_timeout = start_timeout
        self._children: list[tuple[Any, Any]] = []  # (process, pipe)
        self.port: int | None = None
        self.pids: list[int] = []

    @property
    def pid(self) -> int | None:
        """The first process (py-spy records that one)."""
        return self.pids[0] if self.pids else None

    @property
    def webhook_url(self) -> str:
        from bench.servers import HOST, WEBHOOK_PATH

        return f"http://{HOST}:{self.port}{WEBHOOK_PATH}"

    def _start_one(self, options: dict[str, Any], n: int) -> None:
        from bench import servers

        ctx = multiprocessing.get_context("spawn")
        conn, child_conn = ctx.Pipe()
        process = ctx.Process(target=servers.serve, args=(self.kind, options, child_conn),
                              name=f"bench-{self.kind}-bot-{n}", daemon=True)
        self._children.append((process, conn))
        process.start()
        if not conn.poll(self._start_timeout):
            raise RuntimeError(f"{self.kind} bot did not start within {self._start_timeout:.0f}s")
        message = conn.recv()
        if message[0] != "ready":
            raise RuntimeError(f"{self.kind} bot failed to start:\n{message[1]}")
        _, self.port, pid = message
        self.pids.append(pid)

    def __enter__(self) -> "BotProcess":
        try:
            self._start_one(self.options, 1)
            for n in range(2, self.processes + 1):  # the others on the first one's port
                self._start_one(dict(self.options, port=self.port), n)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        for _process, conn in self._children:
            try:
                conn.send("stop")
            except OSError:
                pass
        for process, _conn in self._children:
            process.join(15)
            if process.is_alive():
                process.terminate()  # this process only, by its handle
                process.join(5)


class PySpy:
    """``py-spy record`` of one process for the length of a ``with`` block (raw collapsed stacks).

    Needs py-spy (``.venv/bin/pip install py-spy``) and permission to ptrace the bot process.
    Only the GIL-holding samples are kept (``--gil``): the bot process is GIL-bound, so those are
    where its time goes.
    """

    def __init__(self, pid: int, output: str):
        import shutil
        import sys

        exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        if not os.path.exists(exe):
            raise SystemExit("bench: --py-spy needs py-spy: .venv/bin/pip install py-spy")
        self.command = [exe, "record", "--pid", str(pid), "--output", output, "--format", "raw",
                        "--rate", "1000", "--gil", "--nonblocking"]
        self.output = output
        self._process = None

    def __enter__(self) -> "PySpy":
        import subprocess

        self._process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # let it attach before the timed phase begins
        return self

    def __exit__(self, *exc_info: object) -> None:
        import signal
        import subprocess

        self._process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            _, err = self._process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            _, err = self._process.communicate()
        if self._process.returncode not in (0, -signal.SIGINT) or not os.path.exists(self.output):
            print(f"bench: py-spy failed: {err.decode(errors='replace')[-500:]}")


# --------------------------------------------------------------------------- timing and statistics


@dataclass
class Sample:
    user: int
    kind: str  # command / press / text
    step: str  # the visit step's name
    ms: float
    at: float = 0.0  # when it was sent (time.monotonic), where the phase needs it


def cpu_seconds(pid: int | list[int] | None = None) -> float | None:
    """User+system CPU time of a process so far (this one by default; of all of them for a list);
    None where /proc is missing."""
    if pid is None:
        return time.process_time()
    if isinstance(pid, list):
        times = [cpu_seconds(one) for one in pid]
        return None if None in times else sum(times)
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def machine_busy_seconds() -> float | None:
    """Non-idle CPU time of the whole machine so far, all cores; None where /proc/stat is missing."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How much CPU processes other than ours took while the block ran (a shared machine's noise)."""

    def __init__(self, *pids: int | list[int] | None):
        self.pids = pids
        self.share: float | None = None  # of the whole machine, 0..1

    def _ours(self) -> float | None:
        times = [cpu_seconds(pid) for pid in self.pids] + [cpu_seconds()]
        return None if None in times else sum(times)

    def __enter__(self) -> "OtherLoad":
        self._start = time.perf_counter(), machine_busy_seconds(), self._ours()
        return self

    def __exit__(self, *exc_info: object) -> None:
        wall, busy, ours = time.perf_counter(), machine_busy_seconds(), self._ours()
        if None in (busy, ours, self._start[1], self._start[2]):
            return
        others = (busy - self._start[1]) - (ours - self._start[2])
        self.share = max(0.0, others / ((wall - self._start[0]) * (os.cpu_count() or 1)))


@dataclass
class Phase:
    """Timed work of one bot: its samples, the wall time they took, the CPU each process spent."""

    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0
    bot_cpu: float | None = 0.0  # the bot process; None where it cannot be read
    driver_cpu: float = 0.0  # this process: the stand-in and the load driver

    @property
    def throughput(self) -> float:
        return len(self.samples) / self.seconds if self.seconds > 0 else 0.0

    def add(self, other: "Phase") -> None:
        self.samples += other.samples
        self.seconds += other.seconds
        self.bot_cpu = None if None in (self.bot_cpu, other.bot_cpu) else self.bot_cpu + other.bot_cpu
        self.driver_cpu += other.driver_cpu


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# --------------------------------------------------------------------------- the driver


class Poster:
    """POSTs updates to the webhook and times each round trip."""

    def __init__(self, client: httpx.AsyncClient, url: str, standin: "BenchStandin"):
        self.client = client
        self.url = url
        self.standin = standin
        self.headers = {"Content-Type": "application/json", SECRET_HEADER: SECRET}

    async def post(self, update: dict[str, Any]) -> float:
        body = json.dumps(update).encode()  # outside the timed span: Telegram has it ready
        started = time.perf_counter()
        response = await self.client.post(self.url, content=body, headers=self.headers)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"webhook answered {response.status_code} {response.text[:200]!r} "
                               f"to update {update['update_id']}")
        # As Telegram does: a Bot API method in the webhook's answer is carried out.
        call = self.standin.run_webhook_answer(response.headers.get("content-type", ""), response.content)
        if call is not None and call.status != 200:
            raise RuntimeError(f"the method in the webhook's answer failed: {call.method} {call.response}")
        return elapsed


def http_client(users: int) -> httpx.AsyncClient:
    # One keep-alive connection per user, like Telegram's parallel webhook connections;
    # trust_env=False: a proxy from the environment must never see loopback traffic.
    return httpx.AsyncClient(trust_env=False, timeout=30.0,
                             limits=httpx.Limits(max_connections=users, max_keepalive_connections=users))


async def run_phase(workers, deadline: float, bot_pid: int | list[int] | None = None) -> Phase:
    """Runs one coroutine per user at once; the phase lasts from the start to the last answer."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("bench: out of time (--time-limit)")
    # The driver and the stand-in keep every message of the run; a full collection of that in this
    # process (100 ms and more late in a run) would stall every request in flight, which no bot
    # causes and real Telegram does not do. Collected between phases instead.
    gc.collect()
    gc.disable()
    try:
        bot_before, driver_before = cpu_seconds(bot_pid), cpu_seconds()
        started = time.perf_counter()
        results = await asyncio.wait_for(asyncio.gather(*workers), remaining)
        phase = Phase(seconds=time.perf_counter() - started)
    finally:
        gc.enable()
    bot_after, driver_after = cpu_seconds(bot_pid), cpu_seconds()
    phase.bot_cpu = None if None in (bot_before, bot_after) else bot_after - bot_before
    phase.driver_cpu = driver_after - driver_before
    for samples in results:
        phase.samples.extend(samples)
    return phase


def standin() -> BenchStandin:
    return BenchStandin(TEST_TOKEN, bot_username="zuofeng_bench_bot")
