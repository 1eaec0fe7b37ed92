"""The local blob store: server-made keys, atomic writes, no escaping the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from microforge.settings import Settings
from microforge.storage.blobs import BLOB_KINDS, LocalBlobStore, get_blob_store


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def test_new_keys_are_unique_and_typed(store: LocalBlobStore) -> None:
    first, second = store.new_key("volumes", ".tif"), store.new_key("volumes", "tif")
    assert first != second
    assert first.startswith("volumes/") and first.endswith(".tif") and second.endswith(".tif")
    with pytest.raises(ValueError, match="unknown blob kind"):
        store.new_key("secrets", ".txt")
    with pytest.raises(ValueError, match="suffix"):
        store.new_key("volumes", "/../../etc")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "volumes/../../x",
        "volumes/..",
        "../volumes/x",
        "volumes",
        "x/y.tif",
        "volumes\\x.tif",
        "volumes/.hidden",
        "volumes//x",
    ],
)
def test_bad_keys_are_refused(store: LocalBlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.path(key)
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")


def test_put_bytes_and_read_back(store: LocalBlobStore) -> None:
    key = store.new_key("previews", ".png")
    assert not store.exists(key)
    assert store.put_bytes(key, b"hello") == 5
    assert store.exists(key) and store.size(key) == 5
    with store.open(key) as handle:
        assert handle.read() == b"hello"
    store.delete(key)
    store.delete(key)  # deleting twice is fine
    assert not store.exists(key)


def test_put_file_moves_the_source(store: LocalBlobStore, tmp_path: Path) -> None:
    source = tmp_path / "upload.bin"
    source.write_bytes(b"x" * 1000)
    key = store.new_key("datasets", ".png")
    assert store.put_file(key, source) == 1000
    assert not source.exists()
    assert store.path(key).read_bytes() == b"x" * 1000


def test_writing_publishes_only_on_success(store: LocalBlobStore) -> None:
    key = store.new_key("volumes", ".tif")
    with pytest.raises(RuntimeError), store.writing(key) as temp:
        assert temp.suffix == ".tif"
        temp.write_bytes(b"partial")
        raise RuntimeError("generation failed")
    assert not store.exists(key)
    assert list((store.root / ".tmp").iterdir()) == []

    with store.writing(key) as temp:
        assert not store.exists(key)  # invisible until the block ends
        temp.write_bytes(b"complete")
    assert store.path(key).read_bytes() == b"complete"


def test_writing_nothing_is_an_error(store: LocalBlobStore) -> None:
    key = store.new_key("reports", ".json")
    with pytest.raises(FileNotFoundError), store.writing(key):
        pass
    assert not store.exists(key)


def test_nested_keys_for_checkpoints(store: LocalBlobStore) -> None:
    key = "checkpoints/job_abc/000100.pt"
    store.put_bytes(key, b"ckpt")
    assert store.exists(key)


def test_get_blob_store_follows_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert get_blob_store(settings).root == (tmp_path / "blobs").resolve()
    assert set(BLOB_KINDS) >= {"datasets", "checkpoints", "generators", "volumes", "previews"}


def test_duplicate_survives_the_deletion_of_its_source(store: LocalBlobStore) -> None:
    source = store.new_key("checkpoints", ".pt")
    store.put_bytes(source, b"weights")
    copy = store.new_key("checkpoints", ".pt")
    assert store.duplicate(source, copy) == len(b"weights")
    store.delete(source)
    assert store.path(copy).read_bytes() == b"weights"
    with pytest.raises(FileNotFoundError):
        store.duplicate(source, store.new_key("checkpoints", ".pt"))


def test_duplicate_copies_where_hard_links_are_refused(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = store.new_key("checkpoints", ".pt")
    store.put_bytes(source, b"weights")

    def cross_device(*_: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    copy = store.new_key("checkpoints", ".pt")
    store.duplicate(source, copy)
    assert store.path(copy).read_bytes() == b"weights"
    assert store.path(copy).stat().st_ino != store.path(source).stat().st_ino


def test_listing_shows_the_stores_own_files_only(store: LocalBlobStore) -> None:
    key = store.new_key("volumes", ".tif")
    store.put_bytes(key, b"v")
    (store.root / "volumes" / ".DS_Store").write_bytes(b"finder")  # not a name keys have
    (store.root / "notes.txt").write_bytes(b"not a kind folder")
    scratch = store.new_temp_file()
    scratch.write_bytes(b"partial")
    assert list(store.published_keys()) == [key]
    assert list(store.temp_files()) == [scratch]


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def test_a_tree_blob_is_one_key_published_whole_and_deleted_whole(store: LocalBlobStore) -> None:
    key = store.new_key("volumes", ".ome.zarr")
    with pytest.raises(RuntimeError), store.writing_tree(key) as temp:
        _write_tree(temp, {"zarr.json": b"{}"})
        raise RuntimeError("killed")
    assert not store.exists(key) and list(store.temp_files()) == []
    with store.writing_tree(key) as temp:
        _write_tree(temp, {"zarr.json": b"{}", "0/zarr.json": b"{ }", "0/c/0/0/0": b"x" * 10})
        assert not store.exists(key)
    assert store.exists(key) and store.is_tree(key) and store.size(key) == 15
    assert [name for name, _ in store.tree_files(key)] == ["0/c/0/0/0", "0/zarr.json", "zarr.json"]
    other = store.new_key("volumes", ".tif")
    store.put_bytes(other, b"t")
    assert sorted(store.published_keys()) == sorted([key, other])  # not its files
    store.delete(key)
    store.delete(key)  # again: fine
    assert not store.exists(key) and list(store.temp_files()) == []
