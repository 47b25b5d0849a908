"""A real IMAP server for the tests: Debian's Dovecot (`make test` installs dovecot-imapd), run in
the foreground with a generated configuration in a folder of its own, one user in a passwd file,
plain logins on the loopback interface and a free high port. Nothing is skipped: a server that
cannot start fails the test and says why."""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
instance_name = lifecycle-test-{port}
log_path = {root}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
"""


@dataclass
class ImapServer:
    port: int  # plain, STARTTLS when the server has a certificate
    tls_port: int  # TLS from the start; 0 without a certificate
    user: str
    password: str
    root: Path

    def client(self) -> imaplib.IMAP4:
        connection = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        connection.login(self.user, self.password)
        return connection

    def append(self, *messages: bytes, folder: str = "INBOX") -> None:
        """Deliver messages into a folder as any mail client would: IMAP APPEND."""
        connection = self.client()
        try:
            for raw in messages:
                status, answer = connection.append(folder, None, None, raw)
                assert status == "OK", answer
        finally:
            connection.logout()

    def folder(self, folder: str) -> list[bytes]:
        """The messages of a folder (none when it does not exist), in order."""
        connection = self.client()
        try:
            status, _ = connection.select(f'"{folder}"', readonly=True)
            if status != "OK":
                return []
            _, found = connection.uid("SEARCH", "UNDELETED")
            messages = []
            for uid in (found[0] or b"").split():
                _, data = connection.uid("FETCH", uid, "(BODY.PEEK[])")
                messages.extend(part[1] for part in data if isinstance(part, tuple))
            return messages
        finally:
            connection.logout()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _account() -> pwd.struct_passwd:
    """Dovecot will not run its login processes as root: as root, the package's own `dovecot` user
    runs the whole server; as anyone else, that user does."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam("dovecot")
    except KeyError:
        raise AssertionError("no 'dovecot' system user: install Debian's dovecot-imapd (make test does)") from None


@contextmanager
def dovecot(
    user: str = "bounces", password: str = "imap-secret", certificate: tuple[Path, Path] | None = None
) -> Iterator[ImapServer]:
    """A running server; with a certificate (PEM files), it offers STARTTLS and TLS on a second port."""
    binary = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)
    if binary is None:
        raise AssertionError("Dovecot is not installed: `make test` installs Debian's dovecot-imapd")
    account = _account()
    # Not under pytest's tmp_path: that folder is private to root, and the server runs as its own user.
    root = Path(tempfile.mkdtemp(prefix="lifecycle-dovecot-"))
    port, tls_port = free_port(), free_port() if certificate else 0
    try:
        for folder in ("run", "state", "mail", "home"):
            (root / folder).mkdir()
        ssl = "ssl = no"
        if certificate:
            shutil.copy(certificate[0], root / "cert.pem")
            shutil.copy(certificate[1], root / "key.pem")
            ssl = f"ssl = yes\nssl_cert = <{root}/cert.pem\nssl_key = <{root}/key.pem"
        group = account.pw_gid
        settings = {"root": root, "port": port, "tls_port": tls_port, "ssl": ssl}
        (root / "dovecot.conf").write_text(
            CONFIG.format(**settings, user=account.pw_name, group=grp.getgrgid(group).gr_name)
        )
        (root / "passwd").write_text(f"{user}:{{PLAIN}}{password}:{account.pw_uid}:{group}::{root}/home\n")
        for path in [root, *root.rglob("*")]:
            os.chown(path, account.pw_uid, group)
        as_user = {"user": account.pw_uid, "group": group, "extra_groups": []} if os.geteuid() == 0 else {}
        process = subprocess.Popen(
            [binary, "-F", "-c", str(root / "dovecot.conf")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **as_user,
        )
        try:
            _wait_for(process, port, root)
            yield ImapServer(port, tls_port, user, password, root)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_for(process: subprocess.Popen[bytes], port: int, root: Path) -> None:
    """Until the server greets on its port; fail with its own words if it exits or never does."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise AssertionError(f"Dovecot exited with {process.returncode}: {output}{_log(root)}")
        try:
            imaplib.IMAP4("127.0.0.1", port, timeout=2).logout()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"Dovecot did not answer on 127.0.0.1:{port} within 20 s{_log(root)}")


def _log(root: Path) -> str:
    log = root / "dovecot.log"
    return "\n" + log.read_text(errors="replace") if log.exists() else ""
