"""A real Flower deployment on this machine: one SuperLink with TLS and SuperNode
authentication, one SuperNode per branch that runs only app bundles signed by a key its
owner lists, and the job started with `flwr run`.

The same commands run across machines; here every process listens on 127.0.0.1. Key
material (a throw-away CA, the SuperLink's certificate, each node's ECDSA P-384 key, the app
publisher's Ed25519 signing key, the SuperExec secret) is made under the deployment
directory, owner-only (0600) from its first byte, and never committed.

How a SuperNode comes to trust an app bundle (FAB) in Flower 1.41: `flower-supernode
--trusted-entities FILE` (a YAML map `key id: 'ssh-ed25519 …'`) makes the SuperNode refuse
every FAB whose `verifications` carry no valid Ed25519 signature by one of those keys over
`8-byte big-endian signed_at || sha256(FAB)`. Only the SuperLink fills in `verifications`,
and only for an app it fetched from Flower Hub (`flwr run @publisher/app==x.y.z`, with
`valid_license` set); a FAB uploaded with `flwr run ./dir` carries none and is refused. On
Flower Hub an app is published with `flwr app publish` and signed with `flwr app review`.
Offline, `AppRegistry` below answers the two Hub requests a SuperLink makes (the SuperLink
reads the Hub's address from `FLWR_SUPERGRID_API_URL`), with signatures made exactly as
`flwr app review` makes them. The registry is not trusted: the SuperNode checks the
signature itself.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from common.files import create_secret_once, write_secret
from node_agent.config import TrustedApp, load_node_config, write_node_config

FEDERATION = "sovereign"
EXIT_UNAUTHENTICATED = 305  # Flower's exit code for a SuperNode whose key is not registered
PUBLISHER_KEY_ID = "sovereign-publisher"  # the key id under which nodes list the publisher's key


class DeploymentError(RuntimeError):
    """A deployment step failed; the message names the step and the log to read."""


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_tls(directory: Path, days: int = 30) -> tuple[Path, Path, Path]:
    """A CA and a SuperLink certificate for localhost / 127.0.0.1. Returns (ca, cert, key).
    The private key is written owner-only from the start (a new one replaces any old one)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sovereign alliance CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.crt", directory / "superlink.pem", directory / "superlink.key"
    write_secret(paths[2], _pem(key))
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths


def make_node_key(path: Path) -> Path:
    """A new ECDSA P-384 key in OpenSSH format (what SuperNode authentication expects),
    owner-only from the start. Returns the public key's path; the private key stays at `path`."""
    key = ec.generate_private_key(ec.SECP384R1())
    write_secret(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    public = path.with_suffix(".pub")
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return public


def make_signing_key(path: Path, comment: str = PUBLISHER_KEY_ID) -> str:
    """An Ed25519 key in OpenSSH format, the kind `flwr app review` signs with and
    `--trusted-entities` lists. Made once (0600 from the start): an existing key is kept.
    Returns its public key line ('ssh-ed25519 … comment'), also written to `<path>.pub`."""
    fresh = ed25519.Ed25519PrivateKey.generate()
    create_secret_once(path, fresh.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                 serialization.NoEncryption()))
    key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DeploymentError(f"{path}: not an Ed25519 key")
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    line = f"{line} {comment}"
    path.with_suffix(".pub").write_text(line + "\n")
    return line


def make_superexec_secret(path: Path) -> Path:
    """The shared secret a SuperExec proves it holds (HMAC) before it may take a task from a
    Runtime API (`--superexec-auth-secret-file`). Made once, 0600 from the start."""
    create_secret_once(path, os.urandom(32))
    return path


# ------------------------------------------------------------------ app bundles
@dataclass(frozen=True)
class PublishedApp:
    """A FAB with its identity and the signatures a registry hands to the SuperLink."""

    fab_id: str  # publisher/name
    fab_version: str
    fab_hash: str  # sha256 of the FAB file
    fab: bytes = field(repr=False)
    verifications: tuple[dict, ...] | None = ()  # None: the registry reports no verification at all

    @property
    def app_spec(self) -> str:
        """What `flwr run` takes for an app the SuperLink fetches: '@publisher/name==x.y.z'."""
        return f"@{self.fab_id}=={self.fab_version}"

    def trusted_app(self) -> TrustedApp:
        return TrustedApp(fab_id=self.fab_id, fab_version=self.fab_version, fab_hash=self.fab_hash)


def build_fab(app_dir: Path) -> bytes:
    """The app bundle `flwr build` / `flwr run ./dir` would make (Flower's own builder:
    deterministic, so the same sources always give the same hash)."""
    from flwr.cli.build import build_fab_from_disk

    return build_fab_from_disk(Path(app_dir).resolve())


def sign_fab(fab: bytes, private_key: Path, key_id: str, signed_at: int | None = None) -> dict:
    """One verification record, made as `flwr app review` makes it: an Ed25519 signature
    over `signed_at` (8 bytes, big-endian) followed by sha256(FAB), base64url without padding."""
    from flwr.supercore.primitives.asymmetric_ed25519 import create_message_to_sign, load_private_key, sign_message

    signed_at = int(time.time()) if signed_at is None else signed_at
    signature = sign_message(load_private_key(Path(private_key)), create_message_to_sign(hashlib.sha256(fab).digest(), signed_at))
    return {"public_key_id": key_id, "signature": base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii"),
            "signed_at": signed_at}


def app_bundle(fab: bytes, verifications: list[dict] | None) -> PublishedApp:
    """A FAB and its verification records, with the identity Flower reads from the FAB."""
    from flwr.common.config import get_fab_config, get_metadata_from_config

    fab_id, fab_version = get_metadata_from_config(get_fab_config(fab))
    return PublishedApp(fab_id=fab_id, fab_version=fab_version, fab_hash=hashlib.sha256(fab).hexdigest(), fab=fab,
                        verifications=None if verifications is None else tuple(verifications))


def write_trusted_entities(path: Path, keys: dict[str, str]) -> Path:
    """A SuperNode's `--trusted-entities` file: key id -> 'ssh-ed25519 …' public key.

    Never empty: Flower treats an empty file like no file at all and then runs any FAB."""
    if not keys:
        raise DeploymentError(f"{path}: no trusted entity; an empty list would let the SuperNode run any app")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{json.dumps(k)}: {json.dumps(v)}\n" for k, v in keys.items()))
    return path


def allow_app(node_dir: Path, app: PublishedApp) -> None:
    """Put `app` on the node's own allow-list (`trusted_apps` in node.json): it replaces the
    entries for other builds of the same app; other apps stay as the node owner listed them."""
    config = load_node_config(node_dir)
    keep = [a for a in config.trusted_apps if a.fab_id != app.fab_id]
    write_node_config(config.model_copy(update={"trusted_apps": [*keep, app.trusted_app()]}))


class AppRegistry:
    """The two Flower Hub endpoints a 1.41 SuperLink calls to fetch an app, on 127.0.0.1:
    `POST /hub/fetch-fab` (-> download URL and verification records) and the download.

    Start the SuperLink with `FLWR_SUPERGRID_API_URL` set to `url`."""

    def __init__(self) -> None:
        self._apps: dict[str, PublishedApp] = {}  # "@publisher/name==version" -> app
        self._latest: dict[str, str] = {}
        self._lock = threading.Lock()
        self.requests: list[str] = []  # what was asked, for logs and tests
        self._server: ThreadingHTTPServer | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        assert self._server is not None, "registry not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def publish(self, app: PublishedApp) -> None:
        """Serve `app` (replacing what was served under the same id and version)."""
        with self._lock:
            self._apps[app.app_spec] = app
            self._latest[f"@{app.fab_id}"] = app.app_spec

    def find(self, app_id: str, version: str | None) -> PublishedApp | None:
        with self._lock:
            spec = f"{app_id}=={version}" if version else self._latest.get(app_id, "")
            return self._apps.get(spec)

    def start(self) -> str:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    body = {}
                if self.path != "/hub/fetch-fab" or not isinstance(body, dict):
                    return self._send(404, b'{"detail": "not found"}')
                app = registry.find(str(body.get("app_id")), body.get("app_version"))
                registry.requests.append(f"fetch-fab {body.get('app_id')}=={body.get('app_version')}")
                if app is None:
                    return self._send(404, json.dumps({"detail": f"{body.get('app_id')} not found"}).encode())
                answer: dict = {"fab_url": f"{registry.url}/fab/{app.fab_hash}"}
                if app.verifications is not None:
                    answer["verifications"] = list(app.verifications)
                self._send(200, json.dumps(answer).encode())

            def do_GET(self) -> None:  # noqa: N802
                fab_hash = self.path.removeprefix("/fab/")
                with registry._lock:
                    fab = next((a.fab for a in registry._apps.values() if a.fab_hash == fab_hash), None)
                registry.requests.append(f"download {fab_hash[:12]}")
                if fab is None:
                    return self._send(404, b'{"detail": "not found"}')
                self._send(200, fab, "application/octet-stream")

            def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:  # quiet: `requests` keeps the record
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="app-registry", daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def flower_env(flwr_home: Path | None = None) -> dict[str, str]:
    """The environment every Flower process and command here runs in: no telemetry, no update
    check, and no runtime dependency installation (Flower would install the app's
    dependencies with uv, which pulls a multi-GB CUDA build of torch)."""
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@dataclass
class LocalDeployment:
    """Start, use and stop a TLS + node-authenticated federation on loopback whose
    SuperNodes run only signed app bundles."""

    directory: Path
    port: int = 19092
    processes: list[subprocess.Popen] = field(default_factory=list)
    named: dict[str, subprocess.Popen] = field(default_factory=dict)
    _log_start: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()
        self.flwr_home = self.directory / "flwr"
        self.registry = AppRegistry()
        self.publisher_key = self.directory / "keys" / "publisher"
        self.env = {
            **flower_env(self.flwr_home),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    # -------------------------------------------------------------- lifecycle
    def start_superlink(self) -> None:
        """The SuperLink on 127.0.0.1 with TLS on its one port (Fleet, Control and Runtime
        APIs), SuperNode authentication, and ServerApps run by a SuperExec that must prove
        the shared secret before the Runtime API hands it a task."""
        tls = self.directory / "tls"
        if all((tls / name).is_file() for name in ("ca.crt", "superlink.pem", "superlink.key")):
            self.ca, cert, key = tls / "ca.crt", tls / "superlink.pem", tls / "superlink.key"  # started again: same CA
        else:
            self.ca, cert, key = make_tls(tls)
        secret = make_superexec_secret(self.directory / "keys" / "superexec.secret")
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{self.ca}"\n'
        )
        hub = self.registry.url if self.registry.running else self.registry.start()
        self.spawn(
            "superlink",
            [_bin("flower-superlink"), "--ssl-ca-certfile", str(self.ca), "--ssl-certfile", str(cert),
             "--ssl-keyfile", str(key), "--enable-supernode-auth", "--database", str(self.directory / "superlink.db"),
             "--disable-runtime-dependency-installation", "--isolation", "process",
             "--superexec-auth-secret-file", str(secret), "--host", "127.0.0.1", "--port", str(self.port)],
            env={"FLWR_SUPERGRID_API_URL": hub},
        )
        self._wait_for("superlink", "Uvicorn running", 60)
        self.spawn(
            "superexec-superlink",
            [_bin("flower-superexec"), "--runtime-api-address", f"127.0.0.1:{self.port}", "--root-certificates",
             str(self.ca), "--superexec-auth-secret-file", str(secret)],
        )

    def kill(self, name: str) -> None:
        """SIGKILL one process and its children (a SuperNode, the SuperLink...): a crash, not a shutdown."""
        proc = self.named.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)

    def connection(self, app: PublishedApp):
        """How a coordinator service reaches this SuperLink and runs `app` on it."""
        from coordinator.settings import FlowerConnection

        return FlowerConnection(flwr_home=self.flwr_home, federation=FEDERATION, app=app.app_spec)

    def register(self, name: str, private: Path | None = None) -> Path:
        """Make a node key (at `private`, default keys/<name> of this deployment) and register
        its public half with the SuperLink. Returns the private key."""
        private = private or self.directory / "keys" / name
        public = make_node_key(private)
        self._flwr(["supernode", "register", str(public), FEDERATION], f"registering {name}")
        return private

    def publisher_public_key(self) -> str:
        """The alliance's app publisher key (made on first use) as a trusted-entities line."""
        return make_signing_key(self.publisher_key)

    def publish(self, app_dir: Path) -> PublishedApp:
        """Build the app's FAB, sign it with the publisher key and serve it to the SuperLink."""
        self.publisher_public_key()
        fab = build_fab(app_dir)
        app = app_bundle(fab, [sign_fab(fab, self.publisher_key, PUBLISHER_KEY_ID)])
        self.registry.publish(app)
        return app

    def start_supernode(self, name: str, private_key: Path, node_dir: Path | None, port: int,
                        trusted_entities: Path | None = None) -> subprocess.Popen:
        cmd = [_bin("flower-supernode"), "--root-certificates", str(self.ca), "--superlink", f"127.0.0.1:{self.port}",
               "--auth-supernode-private-key", str(private_key), "--host", "127.0.0.1", "--port", str(port)]
        if trusted_entities is not None:
            cmd += ["--trusted-entities", str(trusted_entities)]
        if node_dir is not None:
            cmd += ["--node-config", f"node-dir='{Path(node_dir).resolve()}'"]
        return self.spawn(f"supernode-{name}", cmd)

    def start_node(self, node_dir: Path, trusted_entities: Path) -> subprocess.Popen:
        """Start a node the way its branch IT would, `sovereign node run --node-dir DIR`: a new
        SuperNode key in the node's own keys/ (registered here), the SuperLink's CA beside it,
        and node.json's `supernode` section pointing at them."""
        from node_agent.config import SuperNodeSettings

        config = load_node_config(node_dir)
        self.register(config.branch_id, config.node_dir / "keys" / "supernode")
        ca = config.node_dir / "tls" / "ca.crt"
        ca.parent.mkdir(parents=True, exist_ok=True)
        ca.write_bytes(self.ca.read_bytes())
        settings = SuperNodeSettings(superlink=f"127.0.0.1:{self.port}", root_certificates=Path("tls/ca.crt"),
                                     auth_key=Path("keys/supernode"), trusted_entities=Path(trusted_entities).resolve(),
                                     runtime_port=free_port())
        write_node_config(config.model_copy(update={"supernode": settings}))
        return self.spawn(f"supernode-{config.branch_id}", [sys.executable, "-m", "sovereign.cli", "node", "run",
                                                            "--node-dir", str(config.node_dir)])

    def run(self, app: Path | PublishedApp, run_config: dict[str, object], timeout: float = 900) -> None:
        """`flwr run` an app on this federation and stream it to the end: a directory is
        bundled and uploaded by the CLI (it carries no signature); a published app is
        fetched by the SuperLink from the registry with its signatures."""
        config = run_config_text(run_config)
        target = app.app_spec if isinstance(app, PublishedApp) else str(app)
        self._flwr(["run", target, FEDERATION, "--stream", "--run-config", config], "flwr run", timeout=timeout)

    def stop(self) -> None:
        """SIGTERM SuperNodes first, then the SuperExec and the SuperLink: no process is left behind."""
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        self.processes.clear()
        self.registry.stop()

    def __enter__(self) -> "LocalDeployment":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -------------------------------------------------------------- helpers
    def log(self, name: str) -> Path:
        return self.directory / "logs" / f"{name}.log"

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a process of this deployment (logged to logs/<name>.log, appended when started again)."""
        self.log(name).parent.mkdir(parents=True, exist_ok=True)
        self._log_start[name] = self.log(name).stat().st_size if self.log(name).exists() else 0
        with self.log(name).open("a") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**self.env, **(env or {})},
                                    start_new_session=True)
        self.processes.append(proc)
        self.named[name] = proc
        return proc


    def _wait_for(self, name: str, needle: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.log(name).open("rb") as log:  # only what this start of the process wrote
                log.seek(self._log_start.get(name, 0))
                if needle.encode() in log.read():
                    return
            if self.named[name].poll() is not None:
                break
            time.sleep(0.5)
        raise DeploymentError(f"{name} did not start; see {self.log(name)}")

    def _flwr(self, args: list[str], step: str, timeout: float = 120) -> None:
        log = self.log(f"flwr-{args[0]}")
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as out:
            done = subprocess.run([_bin("flwr"), *args], stdout=out, stderr=subprocess.STDOUT, env=self.env, timeout=timeout)
        if done.returncode != 0:
            raise DeploymentError(f"{step} failed (exit {done.returncode}); see {log}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_config_text(run_config: dict[str, object]) -> str:
    """`--run-config` text: 'k1=v1 k2=v2' with each value in TOML."""
    return " ".join(f"{k}={_toml(v)}" for k, v in run_config.items())


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "") + "'"
