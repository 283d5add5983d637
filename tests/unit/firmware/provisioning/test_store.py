"""Config store: atomic writes under kill -9, the apply transaction, rejected ETags."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

from offhook.contract.config import parse_config
from offhook.firmware.provisioning.store import ConfigStore, StoredConfig

TRIALS = 100


def version(i: int) -> StoredConfig:
    data = {
        "device": {"name": f"desk {i}"},
        "accounts": [{"user": f"{1000 + i}", "domain": "pbx.example.com", "password": "x" * i}],
        # a large-ish phonebook so that a torn write would be visible as truncated JSON
        "phonebook": [{"name": f"entry {j} of v{i}", "number": f"{j}"} for j in range(200)],
    }
    return StoredConfig(f'"{i}-etag"', i, parse_config(data))


def _writer_child(directory: Path, progress_fd: int) -> None:
    """Runs in a forked child: write LKG versions 0, 1, 2, ... until killed; one byte per write."""
    store = ConfigStore(directory)
    i = 0
    while True:
        store.finish_apply(version(i))
        os.write(progress_fd, b".")
        i += 1


def test_atomic_write_survives_kill_9_at_random_points(tmp_path: Path) -> None:
    rng = random.Random(1234)
    for trial in range(TRIALS):
        directory = tmp_path / f"trial{trial}"
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.close(read_fd)
                _writer_child(directory, write_fd)
            finally:
                os._exit(0)
        os.close(write_fd)
        completed = rng.randint(1, 4)  # let this many writes finish, then kill mid-way
        for _ in range(completed):
            assert os.read(read_fd, 1) == b"."  # bounded: returns b"" if the child dies
        time.sleep(rng.uniform(0, 0.004))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(read_fd)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL

        raw = json.loads((directory / "lkg.json").read_text())  # parses: not torn
        stored = ConfigStore(directory).last_known_good()
        assert stored is not None
        assert stored.revision >= completed - 1  # every finished write is there
        assert raw["etag"] == f'"{stored.revision}-etag"'
        assert stored.config == version(stored.revision).config  # exactly one written version
        assert not list(directory.glob(".*.tmp"))  # a reopened store clears interrupted temps


def test_apply_transaction_promotes_to_last_known_good(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    assert store.last_known_good() is None and store.if_none_match() is None
    v1 = version(1)
    store.write_candidate(v1.etag, v1.revision, v1.config.model_dump(mode="json"))
    candidate = store.validate_candidate()
    assert store.begin_apply(candidate) == 1
    assert store.interrupted_apply() is not None  # in progress
    store.finish_apply(candidate)
    assert store.interrupted_apply() is None
    lkg = store.last_known_good()
    assert lkg is not None and lkg.revision == 1 and lkg.config == v1.config
    assert store.if_none_match() == v1.etag
    assert (tmp_path / "lkg.json").stat().st_mode & 0o777 == 0o600


def test_interrupted_apply_counts_attempts_and_reject_remembers_etag(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    store.finish_apply(version(1))
    v2 = version(2)
    assert store.begin_apply(v2) == 1
    # the phone died mid-apply and comes back with the same config
    store = ConfigStore(tmp_path)
    interrupted = store.interrupted_apply()
    assert interrupted is not None and interrupted.etag == v2.etag and interrupted.attempts == 1
    assert store.begin_apply(v2) == 2
    store.reject(v2.etag)
    assert store.interrupted_apply() is None
    assert store.if_none_match() == v2.etag  # the server answers 304 instead of re-sending it
    assert store.if_none_match(retry_rejected=True) == '"1-etag"'  # explicit resync: try again
    lkg = store.last_known_good()
    assert lkg is not None and lkg.revision == 1
    store.finish_apply(version(3))
    assert store.rejected_etag() is None


def test_corrupt_lkg_is_ignored_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "lkg.json").write_text('{"etag": "x", "revision": 1, "config": {"bogus": 1}}')
    assert ConfigStore(tmp_path).last_known_good() is None
