"""Storage failures, from the outside: the real `dialobot` process refusing a database it cannot use with one
line naming the setting and the cause (exit 2) for every command that opens it; and `/healthz` following the
database's health while the bot runs (503 with the reason while it cannot be read or written, 200 again
after), including a SQLite file deleted under the running bot."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy.engine import make_url

from bot.config import parse_config
from bot.ops.readiness import readiness
from bot.ops.storage_health import STORAGE, check_storage, watch_storage
from storage import open_store
from tests.bot.test_cli import dialobot

COMMANDS = [
    ("chat", "--model", "demo"),
    ("run", "--model", "demo"),
    ("db", "status"),
    ("history", "export", "--channel", "console:local"),
]
PASSWORD = "s3cret-Passw0rd"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """`directory` made read-only for this process: `chattr +i` as root (root ignores permission bits)."""
    directory.mkdir(exist_ok=True)
    as_root = os.geteuid() == 0
    if as_root:
        made = subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode == 0
    else:
        directory.chmod(0o555)
        made = True
    try:
        try:
            (directory / "probe").touch()
        except OSError:
            pass
        else:
            made = False
        if not made:
            pytest.skip(f"cannot make {directory} read-only on this file system")
        yield
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(directory)], capture_output=True)
        else:
            directory.chmod(0o755)


def one_line_everywhere(config: Path, expected: str, env: dict[str, str] | None = None) -> None:
    """Every command that opens the database fails with exactly `dialobot: <expected>` and exit 2."""

    def attempt(command: tuple[str, ...]) -> subprocess.CompletedProcess:
        return dialobot(*command, "--config", str(config), env_extra=env)

    results = [attempt(command) for command in COMMANDS]
    for command, result in zip(COMMANDS, results, strict=True):
        lines = result.stderr.strip().splitlines()
        assert (result.returncode, lines) == (2, [f"dialobot: {expected}"]), (command, result.stderr)
        assert PASSWORD not in result.stderr + result.stdout


def path_config(tmp_path: Path, database: Path) -> Path:
    config = tmp_path / "dialobot.toml"
    config.write_text(f'[storage]\npath = "{database}"\n')
    return config


def url_config(tmp_path: Path) -> Path:
    config = tmp_path / "dialobot.toml"
    config.write_text('[storage]\nurl_env = "DIALOBOT_DB"\n')
    return config


@pytest.mark.process
def test_a_read_only_database_directory(tmp_path):
    directory = tmp_path / "ro"
    with read_only(directory):
        one_line_everywhere(
            path_config(tmp_path, directory / "history.db"),
            f"storage.path: the database directory {directory} is read-only",
        )


@pytest.mark.process
def test_a_missing_database_directory_that_cannot_be_made(tmp_path):
    directory = tmp_path / "ro"
    with read_only(directory):
        one_line_everywhere(
            path_config(tmp_path, directory / "missing" / "history.db"),
            f"storage.path: cannot create the database directory {directory / 'missing'}: "
            f"{os.strerror(1 if os.geteuid() == 0 else 13)}",
        )


@pytest.mark.process
def test_a_directory_where_the_database_file_should_be(tmp_path):
    (tmp_path / "history.db").mkdir()
    one_line_everywhere(
        path_config(tmp_path, tmp_path / "history.db"),
        f"storage.path: {tmp_path / 'history.db'} is a directory, not a database file",
    )


@pytest.mark.process
def test_an_overwritten_database_file(tmp_path):
    (tmp_path / "history.db").write_bytes(b"a backup script wrote its log here\n" * 200)
    one_line_everywhere(
        path_config(tmp_path, tmp_path / "history.db"),
        f"storage.path: {tmp_path / 'history.db'} is not a SQLite database "
        "(overwritten, or another kind of file)",
    )


@pytest.mark.process
def test_a_postgresql_server_that_refuses_connections(tmp_path):
    port = free_port()
    one_line_everywhere(
        url_config(tmp_path),
        f"storage.url_env ($DIALOBOT_DB): cannot connect to the database at 127.0.0.1:{port}: "
        "connection refused",
        env={"DIALOBOT_DB": f"postgresql+asyncpg://dialobot:{PASSWORD}@127.0.0.1:{port}/dialobot"},
    )


@pytest.mark.process
def test_a_wrong_postgresql_password(tmp_path):
    url = os.environ.get("DIALOBOT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("DIALOBOT_TEST_POSTGRES_URL is not set (start a server with `sudo .ci/postgres`)")
    parsed = make_url(url)
    wrong = parsed.set(password=PASSWORD).render_as_string(hide_password=False)
    one_line_everywhere(
        url_config(tmp_path),
        f"storage.url_env ($DIALOBOT_DB): PostgreSQL at {parsed.host}:{parsed.port or 5432} refused the "
        f"password of user {parsed.username!r}",
        env={"DIALOBOT_DB": wrong},
    )


@pytest.mark.process
@pytest.mark.parametrize("url", [f"postgresql+asyncpg//dialobot:{PASSWORD}@host/db", f"::{PASSWORD}"])
def test_a_malformed_database_url(tmp_path, url):
    one_line_everywhere(
        url_config(tmp_path),
        "storage.url_env ($DIALOBOT_DB): not a database URL (expected sqlite+aiosqlite:///path/to/file.db "
        "or postgresql+asyncpg://user:password@host/database)",
        env={"DIALOBOT_DB": url},
    )


@pytest.mark.process
def test_a_config_file_that_is_not_utf8(tmp_path):
    config = tmp_path / "dialobot.toml"
    config.write_bytes('[console]\nname = "caf\u00e9"\n'.encode("latin-1"))
    one_line_everywhere(config, f"{config}: not UTF-8 text (byte 21 is 0xe9); save it as UTF-8")


# ---- /healthz while the bot runs ----


class TcpProxy:
    """A TCP proxy in front of the test PostgreSQL server that a test can cut and restore, as an outage."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Stop listening and drop every open connection: the server is down."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def until(predicate, within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while not await predicate():  # noqa: ASYNC110 - polling another process or a server
            await asyncio.sleep(0.05)


async def test_the_probe_reports_postgresql_down_and_back(tmp_path):
    url = os.environ.get("DIALOBOT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("DIALOBOT_TEST_POSTGRES_URL is not set (start a server with `sudo .ci/postgres`)")
    parsed = make_url(url)
    proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    await proxy.start()
    proxied = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    store = await open_store(proxied)
    try:
        assert await check_storage(store) is None
        await proxy.cut()
        problem = await check_storage(store, limit=5)
        assert problem is not None and f"127.0.0.1:{proxy.port}" in problem, problem
        await proxy.start()
        assert await check_storage(store) is None
    finally:
        await proxy.cut()
        await store.close()


async def test_healthz_is_503_with_the_reason_while_postgresql_is_down_then_200(tmp_path):
    """The watcher and the real health endpoint, in process (the `dialobot run` wiring is tested below)."""
    from bot.ops.health_server import start_operations

    url = os.environ.get("DIALOBOT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("DIALOBOT_TEST_POSTGRES_URL is not set (start a server with `sudo .ci/postgres`)")
    parsed = make_url(url)
    proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    await proxy.start()
    store = await open_store(parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(False))
    config = parse_config({"health": {"enabled": True, "port": free_port()}})
    operations = await start_operations(config, [])
    operations.model_loaded()
    operations.attach_store(store)
    watcher = asyncio.create_task(watch_storage(store, interval=0.1, limit=3))
    try:
        async with aiohttp.ClientSession() as http:

            async def healthz() -> tuple[int, str]:
                async with http.get(f"http://127.0.0.1:{config.health.port}/healthz") as response:
                    return response.status, await response.text()

            async def status_is(code: int) -> bool:
                return (await healthz())[0] == code

            await until(lambda: status_is(200))
            await proxy.cut()
            await until(lambda: status_is(503))
            _, body = await healthz()
            assert body.startswith(f"not ready: {STORAGE}: ") and "connect" in body, body
            await proxy.start()
            await until(lambda: status_is(200))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await operations.close()
        await proxy.cut()
        await store.close()
        readiness.expect([])


# ---- the real process: a SQLite file deleted under the running bot ----


@pytest.mark.process
async def test_a_running_bot_whose_database_file_is_deleted_stops_accepting(tmp_path, tiny_model_dir):
    """Found by deleting the file under `dialobot run`: it kept answering and counting turns, with no warning,
    and after a restart everything since was gone. Now /healthz says why, and nothing more is written."""
    database = tmp_path / "history.db"
    port = free_port()
    config = tmp_path / "dialobot.toml"
    config.write_text(
        f'[storage]\npath = "{database}"\ncheck_seconds = 0.2\n'
        f"[health]\nenabled = true\nport = {port}\n"
        '[console]\nname = "ops"\n'
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("DIALOBOT_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        "--config",
        str(config),
        "--model",
        str(tiny_model_dir),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def healthz() -> tuple[int, str]:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        return response.status, await response.text()
                except aiohttp.ClientError:
                    return 0, ""

            async def reply() -> str:
                async with asyncio.timeout(120):
                    line = await proc.stdout.readline()
                return line.decode().removeprefix("Bot: ").strip()

            async def healthy() -> bool:
                return (await healthz())[0] == 200

            await until(healthy, within=300)
            proc.stdin.write(b"/status\n")
            assert (await reply()).endswith("turns stored in this conversation: 0")

            database.unlink()
            status, body = [None, ""]

            async def unhealthy() -> bool:
                nonlocal status, body
                status, body = await healthz()
                return status == 503

            await until(unhealthy)
            assert f"storage: the database file {database} was deleted while the bot was running" in body
            proc.stdin.write(b"hello\n")
            assert (await reply()) == "Sorry, I can't reach my memory just now. Please try again in a moment."
            assert not database.exists()  # not recreated, nothing written into the deleted file
            proc.stdin.close()
            assert await asyncio.wait_for(proc.wait(), 60) == 0
        stderr = (await proc.stderr.read()).decode()
        assert f"ERROR storage.history_store: storage: the database file {database} was deleted" in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
