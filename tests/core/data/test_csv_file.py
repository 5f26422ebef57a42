"""Tests for :mod:`fedrec.core.data.csv_file`: layouts, headers, and error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrec.core.data.csv_file import load_csv


def write_csv(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- layouts --------------------------------------------------------------------


def test_four_columns_with_header(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "user_id,item_id,rating,timestamp\n"
        "u2,i1,5,300\n"
        "u1,i2,3.5,100\n"
        "u1,i1,1,200\n",
    )
    data = load_csv(path)
    # header skipped: 3 interactions; users u1=0, u2=1; items i1=0, i2=1
    assert len(data) == 3
    np.testing.assert_array_equal(data.user_ids, ["u1", "u2"])
    np.testing.assert_array_equal(data.item_ids, ["i1", "i2"])
    np.testing.assert_array_equal(data.users, [1, 0, 0])
    np.testing.assert_array_equal(data.items, [0, 1, 0])
    np.testing.assert_array_equal(data.ratings, np.array([5.0, 3.5, 1.0], dtype=np.float32))
    np.testing.assert_array_equal(data.timestamps, [300, 100, 200])


def test_two_columns_without_header(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "alice,book\nbob,film\nalice,film\n")
    data = load_csv(path)
    assert len(data) == 3
    assert data.ratings is None
    assert data.timestamps is None
    np.testing.assert_array_equal(data.user_ids[data.users], ["alice", "bob", "alice"])
    np.testing.assert_array_equal(data.item_ids[data.items], ["book", "film", "film"])


def test_three_columns_float_ratings_and_counts(tmp_path: Path) -> None:
    # a dwell time in seconds, a play count, a star rating: any positive number
    path = write_csv(tmp_path, "a,x,0.25\nb,y,12\nc,z,4.0\n")
    data = load_csv(path)
    assert data.timestamps is None
    np.testing.assert_allclose(data.ratings, [0.25, 12.0, 4.0])
    assert data.ratings.dtype == np.float32


def test_ids_stay_strings_and_whitespace_is_stripped(tmp_path: Path) -> None:
    path = write_csv(tmp_path, " 10 , item one ,2\n2,item two,1\n")
    data = load_csv(path)
    # CSV ids are strings, so they sort as strings: "10" < "2"
    np.testing.assert_array_equal(data.user_ids, ["10", "2"])
    np.testing.assert_array_equal(data.item_ids, ["item one", "item two"])
    assert data.user_ids.dtype.kind == "U"


def test_float_timestamps_are_truncated_to_integers(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "1,2,4,874965758.0\n1,3,4,874965759.9\n")
    np.testing.assert_array_equal(load_csv(path).timestamps, [874965758, 874965759])


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "u,i\n\na,b\n\n,\nc,d\n")
    # line 1 is the header ("u" is not a header name, so it is data here), blank
    # lines and a line of empty fields are skipped: u/i, a/b, c/d
    data = load_csv(path)
    assert len(data) == 3


@pytest.mark.parametrize("first_field", ["user", "user_id", "userId", "UID", "user id", "USER"])
def test_header_names_are_recognised(tmp_path: Path, first_field: str) -> None:
    path = write_csv(tmp_path, f"{first_field},item\nu1,i1\nu2,i1\n")
    data = load_csv(path)
    assert len(data) == 2
    np.testing.assert_array_equal(data.user_ids, ["u1", "u2"])


def test_duplicate_rows_keep_the_latest(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "u,i,1,20\nu,i,5,10\n")
    data = load_csv(path)
    # both rows are (u, i); the one at t=20 wins
    np.testing.assert_array_equal(data.ratings, [1.0])
    np.testing.assert_array_equal(data.timestamps, [20])


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        load_csv(tmp_path / "nowhere.csv")


# --- malformed files ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        # lines 1-2 fix 3 columns, line 3 has 2
        ("a,x,1\nb,y,2\nc,z\n", 3, "expected 3 columns (user,item,rating)"),
        ("user,item,rating,timestamp\na,x,1,5\nb,y,2\n", 3, "expected 4 columns"),
        ("a,x,1,2,3\n", 1, "expected 2 to 4 columns"),
        ("lonely\n", 1, "expected 2 to 4 columns"),
        ("user,item,rating\na,x,0\n", 2, "expected a positive number as rating"),
        ("a,x,2\nb,y,-1.5\n", 2, "expected a positive number as rating"),
        ("a,x,nan\n", 1, "expected a positive number as rating"),
        ("a,x,inf\n", 1, "expected a positive number as rating"),
        ("a,x,five\n", 1, "expected a positive number as rating"),
        ("a,x,1,100\nb,y,1,200\nc,z,1,yesterday\n", 3, "expected an integer timestamp"),
        ("a,x,1,inf\n", 1, "expected an integer timestamp"),
        ("a,x\n,y\n", 2, "empty user or item id"),
        ("a,x\nb,\n", 2, "empty user or item id"),
    ],
)
def test_malformed_line_names_file_line_and_expectation(
    tmp_path: Path, text: str, line: int, expected: str
) -> None:
    path = write_csv(tmp_path, text, name="bad_input.csv")
    with pytest.raises(ValueError) as excinfo:
        load_csv(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert f"line {line}:" in message
    assert expected in message


def test_rating_error_quotes_the_offending_text(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,x,-3\n")
    with pytest.raises(ValueError, match="found '-3'"):
        load_csv(path)


@pytest.mark.parametrize("text", ["", "\n\n", "user,item,rating\n"])
def test_file_without_interactions_raises(tmp_path: Path, text: str) -> None:
    path = write_csv(tmp_path, text, name="empty.csv")
    with pytest.raises(ValueError) as excinfo:
        load_csv(path)
    assert str(path) in str(excinfo.value)
    assert "no interactions found" in str(excinfo.value)


def test_header_after_a_utf8_byte_order_mark_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("user,item\nu1,i1\n".encode("utf-8-sig"))
    data = load_csv(path)
    assert len(data) == 1
    np.testing.assert_array_equal(data.user_ids, ["u1"])
