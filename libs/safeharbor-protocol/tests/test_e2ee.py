"""The end-to-end envelope's fixed byte strings (the SDK's vectors hold the whole envelope to them)."""
from __future__ import annotations

import pytest
from safeharbor_protocol import e2ee


def test_wrap_info_is_the_domain_then_canonical_json_of_the_header_prefix() -> None:
    info = e2ee.wrap_info(1, e2ee.SUITE_X25519, ["u-alice", "phone", 2], "messaging:c1", "mid-00000001")
    assert info == (b"safeharbor/e2ee/v1/wrap\x00"
                    b'{"cid":"messaging:c1","mid":"mid-00000001","s":"x25519","snd":["u-alice","phone",2],"v":1}')


def test_content_aad_binds_the_header_and_every_wrapped_key() -> None:
    header = {"v": 1, "s": "x25519", "snd": ["a", "d", 1], "cid": "c", "mid": "m", "ts": 5, "rcp": [["b", "e", 1]]}
    aad = e2ee.content_aad(header, ["AAAA"])
    assert aad.startswith(e2ee.DOMAIN_CONTENT) and aad.endswith(b'"snd":["a","d",1],"ts":5,"v":1}')
    assert b'"ek":["AAAA"]' in aad and e2ee.content_aad(header, ["AAAB"]) != aad


def test_signed_bytes_exclude_the_signature() -> None:
    unsigned = {"v": 1, "ct": "x"}
    assert e2ee.signed_bytes(unsigned) == b'safeharbor/e2ee/v1/signature\x00{"ct":"x","v":1}'
    with pytest.raises(ValueError, match="without its signature"):
        e2ee.signed_bytes({**unsigned, "sig": "y"})


@pytest.mark.parametrize("size", [0, 1, 30, 31, 32, 33, 100])
def test_padding_round_trips_to_32_byte_blocks(size: int) -> None:
    payload = b"\x80\x00x" * size
    padded = e2ee.pad(payload)
    assert len(padded) % e2ee.PAD_BLOCK == 0 and len(padded) > len(payload)
    assert e2ee.unpad(padded) == payload


def test_bad_padding_refused() -> None:
    for bad in (b"\x00" * 32, b"x" * 32, b"x\x80"):
        with pytest.raises(ValueError, match="bad padding"):
            e2ee.unpad(bad)


def test_wrapped_key_sizes_follow_the_suites() -> None:
    assert set(e2ee.WRAPPED_SIZE) == set(e2ee.SUITES) == {e2ee.SUITE_X25519, e2ee.SUITE_PQ}
    assert e2ee.WRAPPED_SIZE[e2ee.SUITE_X25519] == 80 and e2ee.WRAPPED_SIZE[e2ee.SUITE_PQ] == 1168
