"""avcl.data.tar: the fast member parser yields exactly WebDataset's records, and stops cleanly on damage."""
from __future__ import annotations

import io
import tarfile

import pytest
from webdataset.tariterators import tar_file_expander

from avcl.data.stream import StreamConfig
from avcl.data.tar import TarError, tar_records


def webdataset_records(data: bytes) -> list[dict]:
    return list(tar_file_expander([{"url": "x.tar", "stream": io.BytesIO(data)}], eof_value=None))


def tar_bytes(members: dict[str, bytes], format: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=format) as tar:
        directory = tarfile.TarInfo("some/dir")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


MEMBERS = {"k1.json": b"{}", "k1.0000.jpg": b"\xff\xd8" + bytes(700), "__meta__": b"skipped",
           "d/" + "long" * 40 + ".0001.jpg": b"x" * 513, "k\u00e9y.flac": b"", "k2.txt": b"y" * 512}


@pytest.mark.parametrize("format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_records_equal_webdataset_on_every_tar_format(format):
    members = MEMBERS if format != tarfile.USTAR_FORMAT else {k: v for k, v in MEMBERS.items() if len(k) < 100}
    data = tar_bytes(members, format)
    ours = list(tar_records(io.BytesIO(data), "x.tar"))
    assert ours == webdataset_records(data)
    assert [r["fname"] for r in ours] == [name for name in members if name != "__meta__"]


def test_records_equal_webdataset_on_built_shards(timecoded_dataset):
    for shard in sorted(timecoded_dataset.glob("*.tar")):
        data = shard.read_bytes()
        assert list(tar_records(io.BytesIO(data), "x.tar")) == webdataset_records(data)


def test_a_truncated_or_damaged_tar_raises_after_its_complete_members():
    data = tar_bytes(MEMBERS, tarfile.PAX_FORMAT)
    complete = list(tar_records(io.BytesIO(data), "x.tar"))
    for cut in (data.index(b"y" * 512) + 100, data.index(b"y" * 512) - 200, 1024 + 100):  # in data, header
        got = []
        with pytest.raises(TarError, match="x.tar: truncated"):
            got.extend(tar_records(io.BytesIO(data[:cut]), "x.tar"))
        assert got == complete[:len(got)] and len(got) < len(complete)
    damaged = bytearray(data)
    damaged[512 * 3 + 10] ^= 0xFF  # a name byte of a later header: its checksum no longer matches
    with pytest.raises(TarError, match="checksum mismatch at byte"):
        list(tar_records(io.BytesIO(bytes(damaged)), "x.tar"))


def test_an_unknown_tar_reader_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown tar_reader 'tarfile'"):
        StreamConfig(batch_size=2, tar_reader="tarfile")
