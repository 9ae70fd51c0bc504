"""Bad input gets a clear exception of the right kind, and nothing committed is lost or
changed."""

from __future__ import annotations

import pathlib

import pyarrow as pa
import pytest

import apiary
from apiary import Apiary, errors
from conftest import ipc_bytes

GOOD = pa.table({"id": [1, 2], "country": ["us", "de"]})


@pytest.fixture
def ap(tmp_path: pathlib.Path) -> Apiary:
    ap = Apiary("errors", storage=str(tmp_path / "data"))
    ap.create_hive("h")
    ap.create_box("h", "b")
    ap.create_frame("h", "b", "f", {"id": "int64", "country": "utf8"}, partition_by=["country"])
    ap.write_to_frame("h", "b", "f", GOOD)
    return ap


def unchanged(ap: Apiary) -> None:
    info = ap.describe_frame("h", "b", "f")
    assert (info["version"], info["rows"]) == (1, 2)
    assert ap.query("SELECT id FROM h.b.f ORDER BY id").column("id").to_pylist() == [1, 2]


def test_kinds_are_python_exceptions_under_one_base() -> None:
    assert issubclass(errors.InvalidInputError, ValueError)
    assert issubclass(errors.NotFoundError, LookupError)
    for name in errors.__all__:
        assert issubclass(getattr(apiary, name), apiary.ApiaryError)


@pytest.mark.parametrize(
    "data, message",
    [
        pytest.param(b"not arrow at all", "not an Arrow IPC stream", id="garbage"),
        pytest.param(b"PAR1" + b"\x00" * 16, "these bytes are a Parquet file", id="parquet"),
        pytest.param(b"", "IPC", id="empty"),
        pytest.param(ipc_bytes(GOOD)[:-20], "IPC", id="truncated"),
        pytest.param(b"\xff\xff\xff\xff" + (2**31 - 1).to_bytes(4, "little") + b"\x00" * 16, "IPC", id="huge-length"),
    ],
)
def test_malformed_ipc_commits_nothing(ap: Apiary, data: bytes, message: str) -> None:
    with pytest.raises(errors.InvalidInputError, match=message) as caught:
        ap.write_to_frame("h", "b", "f", data)
    assert caught.value.kind == "InvalidInput" and caught.value.retryable is False
    assert "nothing was written" in str(caught.value)
    unchanged(ap)


def test_data_that_does_not_fit_the_frame(ap: Apiary) -> None:
    wrong_type = pa.table({"id": ["one"], "country": ["us"]})
    with pytest.raises(errors.InvalidInputError, match=r"column `id`: expected int64, found utf8"):
        ap.write_to_frame("h", "b", "f", wrong_type)
    unknown = pa.table({"id": [3], "country": ["us"], "extra": [1]})
    with pytest.raises(errors.InvalidInputError, match="extra"):
        ap.write_to_frame("h", "b", "f", unknown)
    null_partition = pa.table({"id": [3], "country": pa.array([None], pa.string())})
    with pytest.raises(errors.InvalidInputError, match="country"):
        ap.overwrite_frame("h", "b", "f", null_partition)
    with pytest.raises(errors.InvalidInputError, match="cannot write a `int`"):
        ap.write_to_frame("h", "b", "f", 42)
    with pytest.raises(errors.InvalidInputError, match="cannot write a `dict`"):
        ap.write_to_frame("h", "b", "f", {"id": [1]})
    unchanged(ap)


def test_a_stream_that_fails_midway_commits_nothing(ap: Apiary) -> None:
    def batches():
        yield pa.record_batch({"id": [7], "country": ["us"]})
        raise RuntimeError("the producer broke")

    reader = pa.RecordBatchReader.from_batches(GOOD.schema, batches())
    with pytest.raises(errors.InvalidInputError, match="the producer broke"):
        ap.write_to_frame("h", "b", "f", reader)
    unchanged(ap)


def test_bad_schemas_create_nothing(ap: Apiary) -> None:
    with pytest.raises(errors.InvalidInputError, match="unknown column type `int99`; supported:"):
        ap.create_frame("h", "b", "g", {"id": "int99"})
    with pytest.raises(errors.InvalidInputError, match="partition column `nope`"):
        ap.create_frame("h", "b", "g", {"id": "int64"}, partition_by=["nope"])
    with pytest.raises(errors.InvalidInputError, match="must be a str"):
        ap.create_frame("h", "b", "g", {"id": 64})
    with pytest.raises(errors.InvalidInputError, match="schema must be"):
        ap.create_frame("h", "b", "g", 12)
    with pytest.raises(errors.InvalidInputError, match="cannot be stored"):
        ap.create_frame("h", "b", "g", pa.schema([("l", pa.list_(pa.int64()))]))
    with pytest.raises(errors.ConflictError, match="different definition"):
        ap.create_frame("h", "b", "f", {"id": "int32", "country": "utf8"}, partition_by=["country"])
    assert ap.create_frame("h", "b", "f", {"id": "int64", "country": "utf8"}, partition_by=["country"]) is False
    assert ap.list_frames("h", "b") == ["f"]
    unchanged(ap)


def test_names_and_missing_things(ap: Apiary) -> None:
    with pytest.raises(errors.InvalidInputError, match="invalid hive name"):
        ap.create_hive("Bad Name")
    with pytest.raises(errors.InvalidInputError, match="invalid frame name"):
        ap.write_to_frame("h", "b", "../etc", GOOD)
    with pytest.raises(errors.NotFoundError, match="does not exist"):
        ap.write_to_frame("h", "b", "missing", GOOD)
    with pytest.raises(LookupError):
        ap.describe_frame("h", "nobox", "f")
    # In SQL, an unknown table is a mistake in the statement (as DataFusion plans it).
    with pytest.raises(errors.InvalidInputError, match="`h.b.missing` does not exist"):
        ap.sql("SELECT * FROM h.b.missing")
    with pytest.raises(errors.InvalidInputError, match="storage"):
        Apiary("x", storage="ftp://nowhere/")
    # A lost colon is not a folder named `s3`: that would be a swarm of one.
    with pytest.raises(errors.InvalidInputError, match="colon missing"):
        Apiary("x", storage="s3//bucket/prefix")
    with pytest.raises(errors.InvalidInputError, match="retention"):
        ap.vacuum("h", "b", "f", retention=-1)
    with pytest.raises(errors.InvalidInputError, match="a column name or a list of column names"):
        ap.create_frame("h", "b", "g", {"country": "utf8"}, partition_by=7)
    unchanged(ap)


def test_one_partition_column_may_be_given_as_a_string(ap: Apiary) -> None:
    assert ap.create_frame("h", "b", "by_country", {"country": "utf8", "n": "int64"}, partition_by="country")
    assert ap.describe_frame("h", "b", "by_country")["definition"]["partition_by"] == ["country"]


def test_node_calls_before_start(ap: Apiary) -> None:
    with pytest.raises(errors.ClosedError, match=r"call start\(\) first"):
        ap.colony_status()
    assert ap.status()["running"] is False
    ap.shutdown()  # a no-op when not started


def test_bad_settings_are_named(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIARY_HEARTBEAT_INTERVAL", "soon")
    with pytest.raises(errors.InvalidInputError, match="APIARY_HEARTBEAT_INTERVAL=`soon`"):
        Apiary("x", storage=str(tmp_path / "d"))
    monkeypatch.setenv("APIARY_HEARTBEAT_INTERVAL", "1s")
    monkeypatch.setenv("APIARY_MEMORY", "lots")
    ap = Apiary("x", storage=str(tmp_path / "d"))
    with pytest.raises(errors.InvalidInputError, match="APIARY_MEMORY=`lots`"):
        ap.start()


@pytest.mark.parametrize(
    "sql, message",
    [
        ("COPY (SELECT 1) TO '/tmp/apiary-hostile.csv'", "COPY"),
        ("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'", "EXTERNAL"),
        ("SELECT * FROM '/etc/passwd'", "does not say which hive and box"),
        ("INSERT INTO h.b.f VALUES (1, 'us')", "write_to_frame"),
        ("DELETE FROM h.b.f", "overwrite_frame"),
        ("DROP TABLE h.b.f", "drop_frame"),
        ("SET datafusion.runtime.temp_directory = '/'", "operator"),
        ("SELECT " + "(" * 5000 + "1" + ")" * 5000, "RecursionLimitExceeded"),
        ("SELEC oops", "Expected: an SQL statement"),
    ],
)
def test_hostile_sql_is_refused(ap: Apiary, sql: str, message: str, tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ApiaryError, match=message) as caught:
        ap.sql(sql)
    assert isinstance(caught.value, errors.InvalidInputError)
    assert not pathlib.Path("/tmp/apiary-hostile.csv").exists()
    unchanged(ap)
