import pytest

from marconi.errors import CapacityError
from marconi.units import format_bytes, parse_capacity


@pytest.mark.parametrize("text, expected", [
    ("40GiB", 40 * 2**30), ("512MiB", 512 * 2**20), ("4e10", 4 * 10**10),
    ("40GB", 40 * 10**9), ("1.5gib", int(1.5 * 2**30)), ("1024", 1024), (" 2 KiB ", 2048),
    (4e10, 4 * 10**10), ("100B", 100),
])
def test_parse_capacity(text, expected):
    assert parse_capacity(text) == expected


@pytest.mark.parametrize("text", ["lots", "40 GiBs", "-5GiB", "0", "", "GiB", "nan", "inf",
                                  "40XB", True])
def test_bad_capacity_is_one_clear_line(text):
    with pytest.raises(CapacityError) as e:
        parse_capacity(text)
    msg = str(e.value)
    assert msg.startswith("capacity: ") and "\n" not in msg     # the CLI says --capacity


def test_format_bytes():
    assert format_bytes(3 * 2**30) == "3.00 GiB"
    assert format_bytes(512) == "512 B"
