"""``odbench list``: honest availability, the protocols' option keys, parameter meanings for users."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from odbench.cli import main
from odbench.engine.registry import Registry
from odbench.protocols import PROTOCOLS


def _row(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.split() and line.split()[0] == name)


def _declared_file(registry: Registry, dataset: str, filename: str) -> dict:
    return next(f for f in registry.get("dataset", dataset).declaration()["files"] if f["filename"] == filename)


def test_a_dataset_is_available_only_once_its_file_is_on_disk(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert main(["list", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    thyroid = _row(out, "thyroid")
    assert thyroid.split()[1] == "no" and "download 0.04 MB" in thyroid, thyroid
    assert _row(out, "cifar10").split()[1] == "no" and "download 170 MB" in _row(out, "cifar10")
    assert "ODBENCH_DATA_DIR" in out  # the note says how to use a copy instead
    imagenet = _row(out, "imagenet10")
    assert imagenet.split()[1] == "no" and "your copy" in imagenet and "no download" in out
    assert _row(out, "digits").split()[1] == "yes" and "bundled" in _row(out, "digits")

    size = _declared_file(Registry(), "thyroid", "38_thyroid.npz")["size"]
    (data / "sub").mkdir()
    (data / "sub" / "38_thyroid.npz").write_bytes(b"\0" * (size + 1))  # another file of that name: not this one
    assert main(["list", "--data-dir", str(data)]) == 0
    assert _row(capsys.readouterr().out, "thyroid").split()[1] == "no"
    (data / "sub" / "38_thyroid.npz").write_bytes(b"\0" * size)  # one folder down, as runs find it
    assert main(["list", "--data-dir", str(data)]) == 0
    thyroid = _row(capsys.readouterr().out, "thyroid")
    assert thyroid.split()[1] == "yes" and "on disk" in thyroid, thyroid


def test_downloads_declare_their_published_sizes() -> None:
    registry = Registry()
    for plugin in registry.all("dataset"):
        for f in plugin.declaration()["files"]:
            assert f["size"], f"{plugin.name}: {f['filename']} declares no size"
    assert _declared_file(registry, "cifar10", "cifar-10-python.tar.gz")["size"] == 170498071
    assert _declared_file(registry, "mnist", "train-images-idx3-ubyte.gz")["size"] == 9912422


def test_an_extracted_folder_or_a_users_copy_counts(tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    (data / "speech_commands_v0.01").mkdir(parents=True)
    (data / "speech_commands_v0.01" / "testing_list.txt").write_text("")
    imagenet = tmp_path / "my_imagenet"
    (imagenet / "val" / "n03888605").mkdir(parents=True)
    monkeypatch.setenv("ODBENCH_IMAGENET_DIR", str(imagenet))
    assert main(["list", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert _row(out, "speech_commands").split()[1] == "yes" and _row(out, "imagenet10").split()[1] == "yes"


def test_list_protocols_names_each_option_with_its_meaning_and_default(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "--protocols"]) == 0
    out = capsys.readouterr().out
    for protocol in PROTOCOLS.values():
        assert f"{protocol.name}: " in out
        for spec in protocol.options().values():
            assert spec.help, f"{protocol.name}'s option {spec.name} has no meaning"
            assert f"  {spec.name} (" in out and spec.help in out
    assert "  stratify (true or false, default false): " in out  # typed as --protocol-option takes it
    assert "  test_fraction (a number, default 0.4): " in out


def test_parameter_meanings_speak_to_users_not_of_the_authors_flags(registry: Registry) -> None:
    """A flag of the authors' scripts may close a meaning as "(authors' --mom)", never stand for the meaning."""
    for plugin in registry.all("method"):
        for p in plugin.declaration().get("params", ()):
            meaning = p["help"]
            assert meaning, f"{plugin.name}.{p['name']} has no meaning"
            assert "script" not in meaning, f"{plugin.name}.{p['name']}: {meaning}"
            bare = re.sub(r"\(authors' --[a-z_]+\)", "", meaning)
            assert not re.search(r"--[a-z]", bare), f"{plugin.name}.{p['name']}: {meaning}"
