"""A real Flower deployment on this machine: one SuperLink with TLS and SuperNode
authentication, one SuperNode per branch, and the job started with `flwr run`.

The same commands run across machines; here every process listens on 127.0.0.1. Key
material (a throw-away CA, the SuperLink's certificate, each node's ECDSA P-384 key) is
made under the deployment directory and never committed.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

FEDERATION = "sovereign"
EXIT_UNAUTHENTICATED = 305  # Flower's exit code for a SuperNode whose key is not registered


class DeploymentError(RuntimeError):
    """A deployment step failed; the message names the step and the log to read."""


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_tls(directory: Path, days: int = 30) -> tuple[Path, Path, Path]:
    """A CA and a SuperLink certificate for localhost / 127.0.0.1. Returns (ca, cert, key)."""
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
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem(key))
    os.chmod(paths[2], 0o600)
    return paths


def make_node_key(path: Path) -> Path:
    """An ECDSA P-384 key in OpenSSH format (what SuperNode authentication expects).
    Returns the public key's path; the private key stays at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    os.chmod(path, 0o600)
    public = path.with_suffix(".pub")
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return public


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@dataclass
class LocalDeployment:
    """Start, use and stop a TLS + node-authenticated federation on loopback."""

    directory: Path
    port: int = 19092
    processes: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()
        self.flwr_home = self.directory / "flwr"
        self.env = {
            **os.environ, "FLWR_HOME": str(self.flwr_home), "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    # -------------------------------------------------------------- lifecycle
    def start_superlink(self) -> None:
        self.ca, cert, key = make_tls(self.directory / "tls")
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{self.ca}"\n'
        )
        self._spawn(
            "superlink",
            [_bin("flower-superlink"), "--ssl-ca-certfile", str(self.ca), "--ssl-certfile", str(cert),
             "--ssl-keyfile", str(key), "--enable-supernode-auth", "--database", str(self.directory / "superlink.db"),
             "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(self.port)],
        )
        self._wait_for("superlink", "Uvicorn running", 60)

    def register(self, name: str) -> Path:
        """Make a node key and register its public half with the SuperLink. Returns the private key."""
        private = self.directory / "keys" / name
        public = make_node_key(private)
        self._flwr(["supernode", "register", str(public), FEDERATION], f"registering {name}")
        return private

    def start_supernode(self, name: str, private_key: Path, node_dir: Path | None, port: int) -> subprocess.Popen:
        cmd = [_bin("flower-supernode"), "--root-certificates", str(self.ca), "--superlink", f"127.0.0.1:{self.port}",
               "--auth-supernode-private-key", str(private_key), "--host", "127.0.0.1", "--port", str(port)]
        if node_dir is not None:
            cmd += ["--node-config", f"node-dir='{Path(node_dir).resolve()}'"]
        return self._spawn(f"supernode-{name}", cmd)

    def run(self, app_dir: Path, run_config: dict[str, object], timeout: float = 900) -> None:
        """`flwr run` the Sovereign app on this federation and stream it to the end."""
        config = " ".join(f"{k}={_toml(v)}" for k, v in run_config.items())
        self._flwr(["run", str(app_dir), FEDERATION, "--stream", "--run-config", config], "flwr run", timeout=timeout)

    def stop(self) -> None:
        """SIGTERM SuperNodes first, then the SuperLink: no process is left behind."""
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        self.processes.clear()

    def __enter__(self) -> "LocalDeployment":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -------------------------------------------------------------- helpers
    def log(self, name: str) -> Path:
        return self.directory / "logs" / f"{name}.log"

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        self.log(name).parent.mkdir(parents=True, exist_ok=True)
        with self.log(name).open("w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.processes.append(proc)
        return proc

    def _wait_for(self, name: str, needle: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if needle in self.log(name).read_text(errors="replace"):
                return
            if self.processes[-1].poll() is not None:
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


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "") + "'"
