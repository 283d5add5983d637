"""Config GETs per second: the provisioning server (device auth + ETag) vs nginx serving the same
rendered configs as static files, both on loopback, same load generator, same run.

Two request kinds per target: a full fetch (200 with the body) and a conditional poll
(If-None-Match with the current ETag: 304), the fleet's steady state. The load generator is a
small asyncio HTTP/1.1 keep-alive client (bounded by time), so the figures measure the servers,
not an HTTP library. Targets take turns in short rounds, so load from elsewhere on the machine
falls on all of them alike; each row also gives the target's own CPU time per request (from
/proc), which load elsewhere hardly changes. A constant-body ASGI app on plain uvicorn (same
workers) shows what one ASGI request cycle costs, the path polls took before the inline answer
of provisioning/poll_protocol.py. Environment: OFFHOOK_BENCH_SECONDS (per target, default 5),
OFFHOOK_BENCH_ROUNDS (5), OFFHOOK_BENCH_DEVICES (200), OFFHOOK_BENCH_CONNECTIONS (32),
OFFHOOK_BENCH_TLS=1 (every target on HTTPS with one throwaway CA and certificate, as phones poll).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from offhook.firmware.processes import stop_process

HOST = "127.0.0.1"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class ClientTls:
    """The load generator's TLS context: None for plain HTTP (OFFHOOK_BENCH_TLS unset)."""

    context: ssl.SSLContext | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.context else "http"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return self.context or True


CLIENT_TLS = ClientTls()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# --- load generator -----------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _worker(
    port: int,
    requests: list[bytes],
    offset: int,
    stop_at: float,
    statuses: dict[int, int],
    limit: int | None,
) -> int:
    reader, writer = await asyncio.open_connection(HOST, port, ssl=CLIENT_TLS.context)
    done = 0
    try:
        index = offset
        while time.monotonic() < stop_at and (limit is None or done < limit):
            writer.write(requests[index % len(requests)])
            status = await _read_response(reader)
            statuses[status] = statuses.get(status, 0) + 1
            done += 1
            index += 1
    finally:
        writer.close()
    return done


async def _load(
    port: int,
    requests: list[bytes],
    seconds: float,
    connections: int,
    per_connection: int | None = None,
) -> LoadResult:
    statuses: dict[int, int] = {}
    start = time.monotonic()
    stop_at = start + seconds
    step = max(1, len(requests) // connections)
    counts = await asyncio.gather(
        *(
            _worker(port, requests, i * step, stop_at, statuses, per_connection)
            for i in range(connections)
        )
    )
    return LoadResult(sum(counts), time.monotonic() - start, statuses)


def run_load(
    port: int,
    requests: list[bytes],
    seconds: float,
    connections: int,
    per_connection: int | None = None,
) -> LoadResult:
    return asyncio.run(_load(port, requests, seconds, connections, per_connection))


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for each in [pid, *map(int, children)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass
class TargetResult:
    requests: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / self.requests * 1e6 if self.requests else 0.0


def measure_interleaved(
    targets: list[tuple[str, int, list[bytes]]],
    pids: dict[str, int],
    seconds: float,
    rounds: int,
    connections: int,
) -> dict[str, TargetResult]:
    """Every target gets ``seconds`` in ``rounds`` slices, taken in turn: whatever else the
    machine does during the run falls on all of them alike, not on whichever ran last."""
    results = {name: TargetResult() for name, _, _ in targets}
    for _ in range(rounds):
        for name, port, requests in targets:
            pid = next(p for prefix, p in pids.items() if name.startswith(prefix))
            cpu_before = process_cpu_seconds(pid)
            load = run_load(port, requests, seconds / rounds, connections)
            total = results[name]
            total.cpu_seconds += process_cpu_seconds(pid) - cpu_before
            total.requests += load.requests
            total.seconds += load.seconds
            for status, count in load.statuses.items():
                total.statuses[status] = total.statuses.get(status, 0) + count
    return results


def get_request(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- targets ------------------------------------------------------------------------------------


def seed_devices(db_url: str, data_dir: Path, count: int) -> list[tuple[str, str]]:
    """Approved devices with credentials and a line each, written straight to the database."""
    from offhook.provisioning import operations as ops
    from offhook.provisioning.auth import new_device_secret, secret_digest
    from offhook.provisioning.crypto import load_key_ring
    from offhook.provisioning.db import Database
    from offhook.provisioning.models import Device, utcnow

    database = Database(db_url)
    database.migrate()
    keys = load_key_ring(data_dir / "secret.key", create=True)
    actor = ops.Actor("bench:seed")
    creds: list[tuple[str, str]] = []
    with database.session() as db:
        ops.create_group(db, actor, "bench", "site", settings={"audio": {"tone_plan": "uk"}})
        for i in range(count):
            secret = new_device_secret()
            mac = f"02:00:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"
            db.add(
                Device(
                    mac=mac,
                    name=f"bench {i}",
                    status="approved",
                    group_id=1,
                    secret_hash=secret_digest(secret),
                    secret_enc=keys.encrypt(secret, "devices.secret"),
                    enrolled_at=utcnow(),
                )
            )
            creds.append((mac, secret))
        db.flush()
        ids = {d.mac: d.id for d in db.query(Device)}
        for i, (mac, _) in enumerate(creds):
            ops.add_line(
                db,
                keys,
                actor,
                ids[mac],
                extension=str(1000 + i),
                registrar="pbx.bench.local",
                password=f"pw{i}",
            )
    database.dispose()
    return [(ids[mac], secret) for mac, secret in creds]


def start_server(
    data_dir: Path,
    db_url: str,
    port: int,
    workers: int,
    extra_env: dict[str, str] | None = None,
    tls: tuple[Path, Path] | None = None,
) -> subprocess.Popen[bytes]:
    """`offhook server` on plain HTTP, or HTTPS with ``tls`` = (certificate, key) (the
    database is already migrated and the key ring created by seed_devices)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFHOOK_")}
    env.update(
        {
            "OFFHOOK_PURGE_INTERVAL_S": "0",
            "OFFHOOK_LOG": "stderr",
            "OFFHOOK_MAX_INFLIGHT": "100000",
            "OFFHOOK_NOTIFY": "0",
            **(extra_env or {}),
        }
    )
    command = [
        sys.executable, "-m", "offhook.firmware.cli", "server", "--db", db_url,
        "--data-dir", str(data_dir), "--listen", f"{HOST}:{port}",
        "--workers", str(workers), "--log-level", "warning",
    ]  # fmt: skip
    command += ["--cert", str(tls[0]), "--key", str(tls[1])] if tls else ["--insecure-http"]
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 (lives as long as the server)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return answering(process, port, "/healthz")


def wait_http(port: int, path: str, process: subprocess.Popen[bytes] | None = None) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited rc={process.returncode}")
        try:
            url = f"{CLIENT_TLS.scheme}://{HOST}:{port}{path}"
            if httpx.get(url, timeout=2, verify=CLIENT_TLS.verify).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"nothing answering on port {port}")


def answering(process: subprocess.Popen[bytes], port: int, path: str) -> subprocess.Popen[bytes]:
    """The process once it answers on port; stopped, not leaked, if it never does."""
    try:
        wait_http(port, path, process)
    except BaseException:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, grace_s=20)


def start_nginx(
    root: Path, port: int, tls: tuple[Path, Path] | None = None
) -> subprocess.Popen[bytes]:
    conf = root / "nginx.conf"
    ssl_lines = f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};" if tls else ""
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(f"""{user}worker_processes 2;
daemon off;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp; uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
    default_type application/json;
    etag on;
    keepalive_requests 1000000;
    server {{
        listen {HOST}:{port}{" ssl" if tls else ""};
        {ssl_lines}
        root {root}/static;
    }}
}}
""")
    (root / "tmp").mkdir(exist_ok=True)
    process = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    return answering(process, port, "/")


BARE_ASGI = """
BODY = {body!r}
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": HEADERS}})
    await send({{"type": "http.response.body", "body": BODY}})
"""


def start_bare_asgi(
    root: Path, port: int, body: bytes, tls: tuple[Path, Path] | None = None
) -> subprocess.Popen[bytes]:
    """A constant-body ASGI app (no auth, no lookup) on plain uvicorn, 2 workers: one ASGI
    request cycle's cost, for comparison with the inline poll answer."""
    (root / "bare_asgi.py").write_text(BARE_ASGI.format(body=body))
    command = [
        sys.executable, "-m", "uvicorn", "bare_asgi:app", "--workers", "2", "--host", HOST,
        "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    if tls:
        command += ["--ssl-certfile", str(tls[0]), "--ssl-keyfile", str(tls[1])]
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    return answering(process, port, "/")


def main() -> int:
    import httpx

    seconds = float(os.environ.get("OFFHOOK_BENCH_SECONDS", "5"))
    devices = int(os.environ.get("OFFHOOK_BENCH_DEVICES", "200"))
    connections = int(os.environ.get("OFFHOOK_BENCH_CONNECTIONS", "32"))
    rounds = max(1, int(os.environ.get("OFFHOOK_BENCH_ROUNDS", "5")))
    root = Path(tempfile.mkdtemp(prefix="offhook-bench-fetch-"))
    os.chmod(root, 0o755)
    processes: list[subprocess.Popen[bytes]] = []
    tls = None
    if os.environ.get("OFFHOOK_BENCH_TLS", "") not in ("", "0"):
        from offhook.firmware.devtools.certs import make_certificates

        certs = make_certificates(root / "tls")
        tls = (certs.cert, certs.key)
        for path in (root / "tls", *tls):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)  # nginx workers read them
        CLIENT_TLS.context = ssl.create_default_context(cafile=str(certs.ca_cert))
    try:
        data_dir = root / "server"
        data_dir.mkdir()
        db_url = f"sqlite:///{data_dir / 'provisioning.db'}"
        creds = seed_devices(db_url, data_dir, devices)
        port = free_port()
        server = start_server(data_dir, db_url, port, 2, tls=tls)
        processes.append(server)

        static = root / "static" / "configs"
        static.mkdir(parents=True)
        full_server, cond_server, full_nginx, cond_nginx = [], [], [], []
        scheme, verify = CLIENT_TLS.scheme, CLIENT_TLS.verify
        with httpx.Client(
            base_url=f"{scheme}://{HOST}:{port}", timeout=30, verify=verify
        ) as client:
            for device_id, secret in creds:
                auth = "Basic " + base64.b64encode(f"{device_id}:{secret}".encode()).decode()
                reply = client.get("/api/v1/device/config", headers={"Authorization": auth})
                reply.raise_for_status()
                (static / f"{device_id}.json").write_bytes(reply.content)
                full_server.append(get_request("/api/v1/device/config", {"Authorization": auth}))
                cond_server.append(
                    get_request(
                        "/api/v1/device/config",
                        {"Authorization": auth, "If-None-Match": reply.headers["ETag"]},
                    )
                )
        for path in (root / "static", static):
            os.chmod(path, 0o755)
        nginx_port = free_port()
        nginx = start_nginx(root, nginx_port, tls)
        processes.append(nginx)
        bare_port = free_port()
        bare = start_bare_asgi(root, bare_port, (static / f"{creds[0][0]}.json").read_bytes(), tls)
        processes.append(bare)
        bare_requests = [get_request("/", {"Authorization": "Basic " + "A" * 64})]
        with httpx.Client(
            base_url=f"{scheme}://{HOST}:{nginx_port}", timeout=30, verify=verify
        ) as client:
            for device_id, _ in creds:
                path = f"/configs/{device_id}.json"
                reply = client.get(path)
                reply.raise_for_status()
                full_nginx.append(get_request(path, {}))
                cond_nginx.append(get_request(path, {"If-None-Match": reply.headers["ETag"]}))

        print(
            f"{devices} devices, {connections} keep-alive connections, {seconds:.0f} s per target "
            f"in {rounds} interleaved rounds; server: `offhook server`, 2 workers, SQLite; "
            f"nginx: 2 workers; 2 shared cores; {'HTTPS (TLS)' if tls else 'plain HTTP'}"
        )
        run_load(port, full_server, 1, connections)  # warm the render caches of both workers
        targets = [
            ("server 200", port, full_server),
            ("nginx 200", nginx_port, full_nginx),
            ("server 304", port, cond_server),
            ("nginx 304", nginx_port, cond_nginx),
            ("plain ASGI app 200", bare_port, bare_requests),
        ]
        pids = {"server": server.pid, "nginx": nginx.pid, "plain ASGI app": bare.pid}
        results = measure_interleaved(targets, pids, seconds, rounds, connections)
        for name, result in results.items():
            expected = 304 if name.endswith("304") else 200
            bad = {s: n for s, n in result.statuses.items() if s != expected}
            print(
                f"  {name}: {result.rate:8.0f} req/s, {result.cpu_us:5.1f} us CPU/request "
                f"({result.requests} requests"
                + (f", UNEXPECTED statuses {bad}" if bad else "")
                + ")"
            )
            if bad:
                return 1
        for kind in ("200", "304"):
            ratio = results[f"server {kind}"].rate / results[f"nginx {kind}"].rate
            print(f"config fetch {kind}: server/nginx = {ratio:.0%} (goal >= 50%)")
        plain = results["plain ASGI app 200"]
        print(
            f"one plain ASGI cycle on uvicorn (constant body, no auth, no lookup): "
            f"{plain.rate / results['nginx 200'].rate:.0%} of nginx; the server's inline poll "
            f"answer (auth + lookup + ETag) = {results['server 200'].rate / plain.rate:.0%} of it"
        )
        return 0
    finally:
        for process in processes:
            stop(process)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
