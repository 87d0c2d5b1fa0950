"""Output files never follow a symlink planted at their path; JSON is written via unique temporaries."""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path

import pytest

from relay_client.safeio import open_nofollow, write_json_atomic
from relay_client.wav import WavWriter


@pytest.mark.parametrize("mode", ["ab", "r+b", "w+b"])
def test_a_symlink_at_the_path_is_refused(tmp_path: Path, mode: str) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "out.flv").symlink_to(victim)
    with pytest.raises(OSError) as info:
        open_nofollow(tmp_path / "out.flv", mode)
    assert info.value.errno == errno.ELOOP
    assert victim.read_bytes() == b"precious"


def test_plain_files_open_as_with_open(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    with open_nofollow(path, "ab") as f:
        f.write(b"one")
    with open_nofollow(path, "ab") as f:
        f.write(b"two")
    with open_nofollow(path, "r+b") as f:
        assert f.read() == b"onetwo"
    with open_nofollow(path, "w+b") as f:
        f.write(b"x")
    assert path.read_bytes() == b"x"


def test_the_wav_writer_refuses_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "s.wav").symlink_to(victim)
    with pytest.raises(OSError):
        WavWriter(tmp_path / "s.wav", 16000, 1)
    assert victim.read_bytes() == b"precious"


def test_json_replaces_a_symlink_itself_never_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "s.json").symlink_to(victim)
    write_json_atomic(tmp_path / "s.json", {"tags": 1})
    assert victim.read_text() == "precious"
    assert not (tmp_path / "s.json").is_symlink()
    assert json.loads((tmp_path / "s.json").read_text()) == {"tags": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "victim"]  # no temporary left


def test_concurrent_json_writers_never_collide(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(50):
                write_json_atomic(path, {"writer": n, "i": i})
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(path.read_text())["i"] == 49
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]
