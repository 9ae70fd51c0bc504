"""The Arrow paths: every producer pyarrow users have goes in without an IPC round trip, and
results come out as pyarrow Tables (or any Arrow consumer) with the frame's types."""

from __future__ import annotations

import datetime
import decimal
import pathlib

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from apiary import Apiary, ArrowStream, ConflictError, NotFoundError
from conftest import ipc_bytes


@pytest.fixture
def ap(tmp_path: pathlib.Path) -> Apiary:
    ap = Apiary("arrow", storage=str(tmp_path / "data"))
    ap.create_hive("h")
    ap.create_box("h", "b")
    ap.create_frame("h", "b", "clicks", {"id": "int64", "page": "utf8", "country": "utf8"}, partition_by=["country"])
    return ap


ROWS = pa.table({"id": [1, 2, 3, 4], "page": ["/a", "/b", None, "/a"], "country": ["us", "de", "us", "fr"]})


def ids(ap: Apiary) -> list[int]:
    return ap.query("SELECT id FROM h.b.clicks ORDER BY id").column("id").to_pylist()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: ROWS, id="pyarrow.Table"),
        pytest.param(lambda: pa.RecordBatchReader.from_batches(ROWS.schema, ROWS.to_batches(max_chunksize=1)), id="RecordBatchReader"),
        pytest.param(lambda: ROWS.to_batches()[0], id="RecordBatch"),
        pytest.param(lambda: pl.from_arrow(ROWS), id="polars.DataFrame"),
        pytest.param(lambda: ROWS.to_pandas(), id="pandas.DataFrame"),
        pytest.param(lambda: ipc_bytes(ROWS), id="ipc-bytes"),
        pytest.param(lambda: bytearray(ipc_bytes(ROWS)), id="ipc-bytearray"),
        pytest.param(lambda: memoryview(ipc_bytes(ROWS)), id="ipc-memoryview"),
    ],
)
def test_every_producer_writes_the_same_rows(ap: Apiary, make) -> None:
    result = ap.write_to_frame("h", "b", "clicks", make())
    assert result["rows_written"] == 4
    assert result["cells_written"] == 3
    assert result["version"] == 1
    got = ap.query("SELECT id, page, country FROM h.b.clicks ORDER BY id")
    assert got.to_pylist() == ROWS.to_pylist()


def test_a_generator_backed_reader_streams_in(ap: Apiary) -> None:
    def batches():
        for i in range(50):
            yield pa.record_batch({"id": [i], "page": [f"/{i}"], "country": ["us"]})

    reader = pa.RecordBatchReader.from_batches(ROWS.schema, batches())
    assert ap.write_to_frame("h", "b", "clicks", reader)["rows_written"] == 50
    assert ids(ap) == list(range(50))


def test_results_out(ap: Apiary) -> None:
    ap.write_to_frame("h", "b", "clicks", ROWS)
    table = ap.query("SELECT country, COUNT(*) AS n FROM h.b.clicks GROUP BY country ORDER BY country")
    assert isinstance(table, pa.Table)
    assert table.to_pydict() == {"country": ["de", "fr", "us"], "n": [1, 1, 2]}

    stream = ap.sql_arrow("SELECT id FROM h.b.clicks ORDER BY id")
    assert isinstance(stream, ArrowStream)
    assert (stream.num_rows, stream.column_names, len(stream)) == (4, ["id"], 4)
    # Readable many times, by any consumer of the PyCapsule interface.
    assert pl.DataFrame(stream)["id"].to_list() == [1, 2, 3, 4]
    assert pa.table(stream).column("id").to_pylist() == [1, 2, 3, 4]
    assert pa.schema(stream) == pa.schema([pa.field("id", pa.int64())])

    # The seeds' form: IPC bytes for pa.ipc.open_stream.
    raw = ap.sql("SELECT id FROM h.b.clicks WHERE country = 'us' ORDER BY id")
    assert isinstance(raw, bytes)
    assert pa.ipc.open_stream(raw).read_all().column("id").to_pylist() == [1, 3]

    assert ap.read_table("h", "b", "clicks", {"country": "us"}).column("id").to_pylist() == [1, 3]
    read = pa.ipc.open_stream(ap.read_from_frame("h", "b", "clicks")).read_all()
    assert sorted(read.column("id").to_pylist()) == [1, 2, 3, 4]
    empty = ap.query("SELECT id FROM h.b.clicks WHERE id > 100")
    assert empty.num_rows == 0 and empty.schema.names == ["id"]


def test_past_versions_read_by_sql_and_by_name(ap: Apiary) -> None:
    ap.write_to_frame("h", "b", "clicks", ROWS)  # version 1
    ap.overwrite_frame("h", "b", "clicks", pa.table({"id": [9], "page": ["/z"], "country": ["jp"]}))
    assert ap.read_frame("h.b.clicks").column("id").to_pylist() == [9]
    assert sorted(ap.read_frame("h.b.clicks", 1).column("id").to_pylist()) == [1, 2, 3, 4]
    assert ap.read_frame("h.b.clicks", version=0).num_rows == 0
    assert ap.read_table("h", "b", "clicks", {"country": "us"}, version=1).column("id").to_pylist() == [1, 3]
    old = ap.query("SELECT COUNT(*) AS n FROM h.b.clicks VERSION AS OF 1")
    assert old.column("n").to_pylist() == [4]
    history = ap.history("h.b.clicks")
    assert [c["operation"] for c in history] == ["create", "append", "overwrite"]
    assert [c["rows_removed"] for c in history] == [0, 0, 4]
    with pytest.raises(NotFoundError, match="no version 7|newest is 2"):
        ap.read_frame("h.b.clicks", 7)
    with pytest.raises(ValueError, match="hive.box.frame|name"):
        ap.read_frame("clicks")


def test_sessions_keep_use(ap: Apiary) -> None:
    ap.write_to_frame("h", "b", "clicks", ROWS)
    session = ap.session()
    session.sql("USE h.b")
    assert session.query("SELECT COUNT(*) AS n FROM clicks").column("n").to_pylist() == [4]
    assert pl.DataFrame(session.sql_arrow("SELECT MAX(id) AS m FROM clicks"))["m"].to_list() == [4]
    # Another session (and a plain call) does not see this session's USE.
    with pytest.raises(ValueError, match="hive.box.frame"):
        ap.session().sql("SELECT COUNT(*) FROM clicks")


TYPED = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("at_utc", pa.timestamp("us", tz="UTC")),
        pa.field("at_paris", pa.timestamp("ns", tz="Europe/Paris")),
        pa.field("naive", pa.timestamp("ms")),
        pa.field("price", pa.decimal128(10, 2)),
        pa.field("big", pa.decimal256(40, 5)),
        pa.field("day", pa.date32()),
        pa.field("text", pa.large_string()),
        pa.field("blob", pa.binary()),
        pa.field("flag", pa.bool_()),
        pa.field("ratio", pa.float32()),
        pa.field("small", pa.int8()),
        pa.field("unsigned", pa.uint32()),
        pa.field("kind", pa.string(), nullable=False),
    ]
)


def typed_rows() -> pa.Table:
    utc = datetime.timezone.utc
    return pa.table(
        {
            "id": [1, 2, 3],
            "at_utc": [datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=utc), None, datetime.datetime(1970, 1, 1, tzinfo=utc)],
            "at_paris": pa.array([1_700_000_000_123_456_789, None, -1], pa.timestamp("ns", tz="Europe/Paris")),
            "naive": [datetime.datetime(2000, 2, 29, 12), None, datetime.datetime(1999, 12, 31, 23, 59, 59)],
            "price": [decimal.Decimal("12345678.90"), None, decimal.Decimal("-0.01")],
            "big": [decimal.Decimal("12345678901234567890123456789012345.12345"), None, decimal.Decimal("0.00001")],
            "day": [datetime.date(2026, 12, 2), None, datetime.date(1, 1, 1)],
            "text": ["é" * 1000, None, ""],
            "blob": [b"\x00\xff", None, b""],
            "flag": [True, None, False],
            "ratio": [1.5, None, float("inf")],
            "small": [-128, None, 127],
            "unsigned": [4_294_967_295, None, 0],
            "kind": ["a", "b", "a"],
        },
        schema=TYPED,
    )


def test_types_round_trip(tmp_path: pathlib.Path) -> None:
    ap = Apiary("types", storage=str(tmp_path / "data"))
    ap.create_hive("h")
    ap.create_box("h", "b")
    # An Arrow schema defines the frame as exactly these types.
    assert ap.create_frame("h", "b", "typed", TYPED, partition_by=["kind"]) is True
    declared = {c["name"]: c["type"] for c in ap.describe_frame("h", "b", "typed")["definition"]["schema"]["columns"]}
    assert declared["at_paris"] == "timestamp(ns, Europe/Paris)"
    assert declared["big"] == "decimal256(40, 5)"
    assert declared["text"] == "large_utf8"

    rows = typed_rows()
    assert ap.write_to_frame("h", "b", "typed", rows)["rows_written"] == 3

    # Reading back gives the frame's types and the same values, nulls included.
    back = ap.read_table("h", "b", "typed").sort_by("id").select(TYPED.names)
    assert back.schema == TYPED
    assert back.equals(rows)

    # SQL returns the same values (strings may come back as string views, as DataFusion reads
    # them): cast to the declared schema, the tables are equal.
    queried = ap.query("SELECT * FROM h.b.typed ORDER BY id").select(TYPED.names)
    assert queried.cast(TYPED).equals(rows)
    assert queried.schema.field("at_paris").type == pa.timestamp("ns", tz="Europe/Paris")
    assert queried.schema.field("price").type == pa.decimal128(10, 2)


def test_pandas_and_polars_strings_fit_utf8_frames(ap: Apiary) -> None:
    # pandas 3 exports strings as large_string, polars as string_view: both fit `utf8`.
    frame = pd.DataFrame({"id": [10, 11], "page": ["/p", None], "country": ["nz", "nz"]})
    assert ap.write_to_frame("h", "b", "clicks", frame)["rows_written"] == 2
    df = pl.DataFrame({"id": [12], "page": ["/q"], "country": ["nz"]})
    assert ap.write_to_frame("h", "b", "clicks", df)["rows_written"] == 1
    assert ap.overwrite_frame("h", "b", "clicks", df)["rows_written"] == 1
    assert ids(ap) == [12]


def test_maintenance_and_catalog_calls(ap: Apiary) -> None:
    for i in range(5):
        ap.write_to_frame("h", "b", "clicks", pa.table({"id": [i], "page": ["/"], "country": ["us"]}))
    assert ap.describe_frame("h", "b", "clicks")["cells"] == 5
    compacted = ap.compact("h", "b", "clicks")
    assert compacted["commits"] == 1 and compacted["cells_removed"] == 5 and compacted["cells_added"] == 1
    assert ids(ap) == list(range(5))
    # The replaced files are kept for readers of older versions until the retention passes.
    vacuumed = ap.vacuum("h", "b", "clicks", retention=datetime.timedelta(hours=1))
    assert vacuumed == {"files_deleted": 0, "bytes_deleted": 0, "files_kept": 6}
    assert ids(ap) == list(range(5))

    assert ap.list_hives() == ["h"] and ap.list_boxes("h") == ["b"] and ap.list_frames("h", "b") == ["clicks"]
    assert ap.create_hive("h") is False and ap.create_box("h", "b") is False
    with pytest.raises(ConflictError, match="drop with cascade"):
        ap.drop_box("h", "b")
    ap.drop_frame("h", "b", "clicks")
    assert ap.list_frames("h", "b") == []
    ap.create_box("h", "other")
    ap.drop_hive("h", cascade=True)
    assert ap.list_hives() == []
