"""What does DKIM cost a tick? `bench/tick_welcome.py`'s 10,000 due welcome emails through the
`file` sender, with no `dkim:` entry, with an RSA 2048 key and with an Ed25519 key.

    .venv/bin/python bench/dkim_cost.py [--emails N] [--rounds R]

Each run is a whole `lifecycle tick` in this process on a fresh copy of one store; the fastest of
`--rounds` alternating runs counts. The signature alone is timed too: `Signer.sign` over the
messages the unsigned tick wrote, which a busy shared machine disturbs far less than whole ticks
(their difference can drown in its noise). It prints a markdown table and the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tick_welcome import machine, make_project, run_tick, timed

from engine.mail.dkim import Key, Signer

KEYS = {
    "no signature": None,
    "RSA 2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "Ed25519": ed25519.Ed25519PrivateKey.generate,
}


def with_key(base: Path, project: Path, make_key) -> None:
    """A copy of the store whose config signs with one new key (or none)."""
    shutil.copytree(base, project)
    if make_key is None:
        return
    pem = make_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    os.environ["BENCH_DKIM_KEY"] = pem.decode()
    config = yaml.safe_load((project / "config.yaml").read_text(encoding="utf-8"))
    config["dkim"] = [{"domain": "example.com", "selector": "bench", "private_key_env": "BENCH_DKIM_KEY"}]
    (project / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; the fastest counts")
    args = parser.parse_args()
    os.environ.setdefault("LIFECYCLE_SECRET", "bench-secret")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        make_project(root / "base", args.emails)
        best: dict[str, float] = {}
        for n in range(args.rounds):
            for label, make_key in KEYS.items():
                project = root / f"{label.replace(' ', '_')}{n}"
                with_key(root / "base", project, make_key)
                seconds = timed(partial(run_tick, project / "config.yaml"))
                sent = len(list((project / "outbox").glob("*.eml")))
                assert sent == args.emails, (label, sent)
                signed = (project / "outbox" / "1.eml").read_bytes().startswith(b"DKIM-Signature:")
                assert signed == (make_key is not None), label
                best[label] = min(best.get(label, seconds), seconds)
                if make_key is None:
                    messages = [path.read_bytes() for path in sorted((project / "outbox").glob("*.eml"))]
                shutil.rmtree(project)
        signing = {
            label: sign_seconds(messages, make_key(), args.rounds) for label, make_key in KEYS.items() if make_key
        }
    base = best["no signature"]
    print(f"{args.emails:,} welcome emails, `lifecycle tick` with the file sender, best of {args.rounds}; {machine()}")
    print()
    print("| signing | tick (s) | tick, ms per email | difference, ms per email | `Signer.sign` alone, ms per email |")
    print("|---|---:|---:|---:|---:|")
    for label, seconds in best.items():
        difference = "" if label == "no signature" else f"{(seconds - base) / args.emails * 1000:.3f}"
        alone = f"{signing[label] / len(messages) * 1000:.3f}" if label in signing else ""
        print(f"| {label} | {seconds:.2f} | {seconds / args.emails * 1000:.3f} | {difference} | {alone} |")


def sign_seconds(messages: list[bytes], private, rounds: int) -> float:
    """The fastest of `rounds` passes of one key's signer over every message."""
    signer = Signer([Key("example.com", "bench", private)])
    return min(timed(lambda: [signer.sign(raw) for raw in messages]) for _ in range(rounds))


if __name__ == "__main__":
    main()
